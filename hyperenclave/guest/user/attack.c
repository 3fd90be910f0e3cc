/* attack COMMAND [ARGS...]: hands one command line to /dev/he_attack (the LKDTM-like test
 * module, kernel/drivers/he_attack.c) and prints its result line. Exit status 1 when the
 * driver refused the command. */
#include "libc.h"

int main(int argc, char **argv)
{
    char line[128], result[256];
    size_t len = 0;
    if (argc < 2) {
        printf("usage: attack COMMAND [ARGS...]\n");
        return 2;
    }
    for (int i = 1; i < argc; i++)
        len += (size_t)snprintf(line + len, sizeof(line) - len, "%s%s", i > 1 ? " " : "",
                                argv[i]);
    if (len >= sizeof(line)) {
        printf("attack: command too long\n");
        return 2;
    }
    int fd = open("/dev/he_attack", O_RDWR);
    if (fd < 0) {
        printf("attack: /dev/he_attack: %s\n", strerror(errno));
        return 1;
    }
    ssize_t written = write(fd, line, len);
    int err = errno;
    ssize_t n = read(fd, result, sizeof(result) - 1);
    result[n > 0 ? n : 0] = 0;
    close(fd);
    if (written < 0) {
        printf("attack: %s (%s)\n", result, strerror(err));
        return 1;
    }
    printf("attack: %s\n", result);
    return 0;
}
