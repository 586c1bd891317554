/* Running the edgetrain CLI from a test: a private temporary directory, the
 * binary ($ET_CLI or build/edgetrain), and one call that runs a command line
 * and captures its exit status and stderr. */
#ifndef ET_CLI_HARNESS_H
#define ET_CLI_HARNESS_H
#include <stddef.h>

extern char ch_dir[256];  /* the test's temporary directory */
extern const char *ch_cli; /* the CLI binary */

/* Creates ch_dir as /tmp/<prefix>.XXXXXX and picks ch_cli; 0 on success. */
int ch_setup(const char *prefix);
/* Removes ch_dir; 0 on success. */
int ch_teardown(void);
/* Runs `ch_cli args` (stdout to ch_dir/stdout.txt); returns the exit status
 * (128 + signal if killed), the number of stderr lines, and up to cap - 1
 * bytes of stderr (err may be NULL). */
int ch_run(const char *args, int *err_lines, char *err, size_t cap);
/* Whether Debian's Fashion-MNIST is installed. */
int ch_have_fmnist(void);
#endif
