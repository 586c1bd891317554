/* Errors are values: a status code plus a per-thread message. */
#include "edgetrain.h"

#include <stdarg.h>
#include <stdio.h>

static _Thread_local char err_msg[512];

const char *et_last_error(void) { return err_msg; }

et_status et_set_error(et_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err_msg, sizeof err_msg, fmt, ap);
    va_end(ap);
    return st;
}

const char *et_status_name(et_status st) {
    static const char *const names[] = {"ok", "invalid argument", "out of memory", "I/O error",
                                        "malformed file", "shape mismatch", "unsupported"};
    _Static_assert(sizeof names / sizeof names[0] == ET_ERR_UNSUPPORTED + 1,
                   "status names out of sync");
    return (unsigned)st <= ET_ERR_UNSUPPORTED ? names[st] : "unknown status";
}
