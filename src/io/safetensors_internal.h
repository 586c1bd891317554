/* Internal entry points of src/io/safetensors.c (tests and fuzzers only). */
#ifndef ET_SAFETENSORS_INTERNAL_H
#define ET_SAFETENSORS_INTERNAL_H

#include "edgetrain.h"

/* Parses a whole safetensors file held in memory, with exactly the checks of
 * et_st_open(). The data area is copied (the caller keeps `data`); the result
 * is released with et_st_close(). `what` names the source in error messages
 * (NULL: "<memory>"). */
et_status et_st_parse_buffer(const void *data, size_t size, const char *what, et_safetensors **out);

/* Largest JSON header accepted, in bytes (the reference implementation's
 * limit). */
#define ET_ST_MAX_HEADER ((uint64_t)100 << 20)

#endif
