/*
 * config: a reader of "key value" configuration files, one setting a line.
 * It knows the syntax, not the settings: each setting goes to a callback,
 * and every error comes back as "FILE:LINE: reason" (or "FILE: reason" when
 * the file cannot be read), so a person can find the line.
 *
 * Syntax:
 *   - blank lines and lines whose first non-blank character is '#' are
 *     skipped; a '#' after whitespace starts a comment that runs to the end
 *     of the line; spaces and tabs around keys and values are trimmed;
 *   - a key is [A-Za-z0-9][A-Za-z0-9._-]* (at most 200 bytes), then
 *     whitespace, then the value;
 *   - a value is the rest of the line, or "..." to keep leading or trailing
 *     spaces or a '#' after a space (escapes inside quotes: \" and \\ only);
 *     "" is the empty value; a key without a value is an error;
 *   - a key may appear once; a second occurrence names both lines;
 *   - the file holds UTF-8 without control characters other than tab (an
 *     optional byte order mark and "\r\n" line ends are accepted), lines of
 *     at most CONFIG_MAX_LINE bytes, CONFIG_MAX_BYTES in all.
 * Content is never trusted: anything else is an error, never an abort.
 *
 * Thread-safety: no shared state; each call stands alone.
 */
#ifndef DERRD_CONFIG_H
#define DERRD_CONFIG_H

#include <stddef.h>

#define CONFIG_MAX_BYTES (1024 * 1024)
#define CONFIG_MAX_LINE 4096

/* Called once per setting, in file order. key and value are NUL-terminated
 * and valid only during the call. Returns 0 to go on, or a negative errno
 * with the reason in err (the reader prefixes "FILE:LINE: ") to stop. */
typedef int (*config_line_fn)(void *ud, const char *file, int line, const char *key,
                              const char *value, char *err, size_t errlen);

/* Reads the file at path and hands each setting to fn. Returns 0; a
 * negative errno when the file cannot be read ("FILE: reason", -EFBIG when
 * it is over CONFIG_MAX_BYTES); -EBADMSG for a malformed line; or fn's
 * return value. Stops at the first error, with its text in err. */
int config_read_file(const char *path, config_line_fn fn, void *ud, char *err, size_t errlen);

/* The same over text[0..len) held in memory (it need not end in NUL);
 * name is what error messages call it. */
int config_parse(const char *name, const char *text, size_t len, config_line_fn fn, void *ud,
                 char *err, size_t errlen);

#endif
