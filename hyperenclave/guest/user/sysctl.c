/*
 * sysctl: read and write kernel parameters under /proc/sys, like procps' sysctl.
 *   sysctl [-n] KEY...                 prints "KEY = VALUE" (-n: only the value)
 *   sysctl [-n] [-q] [-w] KEY=VALUE... writes, then prints "KEY = VALUE" (-q: nothing)
 * Keys are dotted (dev.hyper_enclave.enabled) or use slashes. Exit status 255 when a key
 * could not be read or written.
 */
#include "libc.h"

#define ENOENT 2

static int opt_n, opt_q;

/* "dev.hyper_enclave.enabled" -> "/proc/sys/dev/hyper_enclave/enabled" and the dotted name */
static void key_names(const char *key, size_t len, char *path, size_t psize, char *name,
                      size_t nsize)
{
    snprintf(name, nsize, "%.*s", (int)len, key);
    for (char *p = name; *p; p++)
        if (*p == '/')
            *p = '.';
    snprintf(path, psize, "/proc/sys/%s", name);
    for (char *p = path + 10; *p; p++)
        if (*p == '.')
            *p = '/';
}

static void show(const char *name, const char *value)
{
    if (opt_n)
        printf("%s\n", value);
    else
        printf("%s = %s\n", name, value);
}

static int open_key(const char *path, const char *name, int flags, const char *verb)
{
    int fd = open(path, flags);
    if (fd >= 0)
        return fd;
    if (errno == ENOENT)
        dprintf(2, "sysctl: cannot stat %s: %s\n", path, strerror(errno));
    else
        dprintf(2, "sysctl: %s key \"%s\": %s\n", verb, name, strerror(errno));
    return -1;
}

static int read_key(const char *key)
{
    char path[160], name[128], value[256];
    key_names(key, strlen(key), path, sizeof(path), name, sizeof(name));
    int fd = open_key(path, name, O_RDONLY, "reading");
    if (fd < 0)
        return -1;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(value) - 1 && (n = read(fd, value + len, sizeof(value) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    if (n < 0) {
        dprintf(2, "sysctl: reading key \"%s\": %s\n", name, strerror(errno));
        return -1;
    }
    while (len && value[len - 1] == '\n')
        len--;
    value[len] = 0;
    show(name, value);
    return 0;
}

static int write_key(const char *setting)
{
    char path[160], name[128];
    const char *eq = strchr(setting, '=');
    if (!eq || eq == setting) {
        dprintf(2, "sysctl: \"%s\" must be of the form name=value\n", setting);
        return -1;
    }
    const char *value = eq + 1;
    key_names(setting, (size_t)(eq - setting), path, sizeof(path), name, sizeof(name));
    int fd = open_key(path, name, O_WRONLY, "setting");
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, value, strlen(value));
    close(fd);
    if (n < 0) {
        dprintf(2, "sysctl: setting key \"%s\": %s\n", name, strerror(errno));
        return -1;
    }
    if (!opt_q)
        show(name, value);
    return 0;
}

int main(int argc, char **argv)
{
    int opt_w = 0, failed = 0, keys = 0;
    for (int i = 1; i < argc; i++) {
        if (argv[i][0] == '-') {
            for (const char *o = argv[i] + 1; *o; o++) {
                if (*o == 'w')
                    opt_w = 1;
                else if (*o == 'n')
                    opt_n = 1;
                else if (*o == 'q')
                    opt_q = 1;
                else {
                    dprintf(2, "sysctl: invalid option -- '%c'\n", *o);
                    return 255;
                }
            }
            continue;
        }
        keys++;
        if (opt_w || strchr(argv[i], '='))
            failed |= write_key(argv[i]);
        else
            failed |= read_key(argv[i]);
    }
    if (!keys) {
        dprintf(2, "Usage: sysctl [-n] [-q] [-w] variable[=value] ...\n");
        return 255;
    }
    return failed ? 255 : 0;
}
