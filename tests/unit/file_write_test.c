/*
 * file_write_atomic and file_replace (lib/util.c) with several writers of
 * one file at once, as daemons in network namespaces that share /etc write
 * /etc/resolv.conf: every write succeeds, and the file always holds one
 * writer's whole text, never a mix or nothing.
 */

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lib/util.h"
#include "tap.h"

#define WRITERS  4
#define ROUNDS   300

static char  path[64];


static void
text_of(int w, char *buf, size_t size)
{
    /* lengths differ: a mix of two texts or a short one would show */
    snprintf(buf, size, "writer %d\n%.*s\n", w, 100 * (w + 1),
             "........................................................"
             "........................................................"
             "........................................................"
             "........................................................"
             "........................................................"
             "........................................................"
             "........................................................"
             "........................................................");
}


/* a child's rounds: its exit status is how many writes failed */
static int
writer(int w)
{
    char  text[512];
    int   failed = 0;

    text_of(w, text, sizeof(text));
    for (int i = 0; i < ROUNDS; i++) {
        if (file_write_atomic(path, text, strlen(text), 0644) != 0) {
            failed++;
        }
    }
    return failed > 255 ? 255 : failed;
}


int
main(void)
{
    char         dir[] = "/tmp/file-write-XXXXXX", text[WRITERS][512], buf[1024];
    pid_t        pid[WRITERS];
    int          status, failed = 0, whole = 1, n;
    struct stat  st;

    if (mkdtemp(dir) == NULL) {
        return 1;
    }
    snprintf(path, sizeof(path), "%s/resolv.conf", dir);
    for (int w = 0; w < WRITERS; w++) {
        text_of(w, text[w], sizeof(text[w]));
    }
    ok(file_write_atomic(path, text[0], strlen(text[0]), 0644) == 0,
       "one writer: the file is written");
    ok(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644,
       "with the mode asked for (0%o)", st.st_mode & 0777);

    for (int w = 0; w < WRITERS; w++) {
        pid[w] = fork();
        if (pid[w] == 0) {
            _exit(writer(w));
        }
    }
    /* meanwhile the file is read: always one writer's whole text */
    for (int i = 0; i < 2000; i++) {
        int fd = open(path, O_RDONLY);

        if (fd < 0) {
            whole = 0;
            break;
        }
        n = (int) read(fd, buf, sizeof(buf) - 1);
        close(fd);
        buf[n > 0 ? n : 0] = '\0';
        int match = 0;
        for (int w = 0; w < WRITERS; w++) {
            match |= strcmp(buf, text[w]) == 0;
        }
        whole &= match;
    }
    for (int w = 0; w < WRITERS; w++) {
        waitpid(pid[w], &status, 0);
        failed += WIFEXITED(status) ? WEXITSTATUS(status) : 1;
    }
    ok(failed == 0, "%d writers x %d rounds at once: every write succeeds"
       " (%d failed)", WRITERS, ROUNDS, failed);
    ok(whole, "and a reader always finds one writer's whole text");

    snprintf(buf, sizeof(buf), "ls -A %s | grep -v '^resolv.conf$' | wc -l"
             " | grep -qx 0", dir);
    ok(system(buf) == 0, "no temporary file is left behind");

    snprintf(buf, sizeof(buf), "rm -rf %s", dir);
    if (system(buf) != 0) {
        return 1;
    }
    return tap_done();
}
