/*
 * App ids as text: in configuration (mesh_allow_apps, mesh_target, the
 * daemon's allowlists), in headers (x-dstack-app-id, x-dstack-target-app)
 * and in gateway names.  One rule everywhere: hex digits, an even count
 * (an app id is raw bytes written as hex), any case, compared lowercased.
 *
 * Plain C, no nginx types: compiled into the module, the daemon and the
 * tools.
 */

#ifndef DSTACK_APP_ID_H
#define DSTACK_APP_ID_H

#include <stddef.h>


/* app_id is 20 bytes in practice; anything longer than 64 is refused */
#define APP_ID_BYTES_MAX   64
#define APP_ID_HEX_MAX     (2 * APP_ID_BYTES_MAX)


/*
 * Whether s[0..len) is 2..max hex digits, an even count; if so and "out"
 * is not NULL, writes it there lowercased and NUL-terminated (max + 1
 * bytes).  Returns 1 or 0.
 */
int app_id_parse(const char *s, size_t len, size_t max, char *out);

#endif /* DSTACK_APP_ID_H */
