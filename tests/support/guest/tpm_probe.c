/*
 * tpm_probe: what a hostile host tries on the monitor's TPM objects through /dev/tpm0 (raw
 * TPM2 commands, as the device TCTI sends them); prints each response code:
 *   "tpm_probe: ReadPublic 0x81000101 rc=0x18b"
 *   ReadPublic HANDLE...   read the public area of a persistent object
 *   Unseal HANDLE...       unseal a persistent object (empty password session)
 *   EvictControl HANDLE... evict a persistent object (owner hierarchy)
 *   Clear                  TPM2_Clear (lockout hierarchy): would destroy the monitor's keys
 */
#include "libc.h"

static void be16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v; }
static void be32(unsigned char *p, unsigned v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

/* Append a password session with an empty password. */
static unsigned pw_session(unsigned char *p)
{
    be32(p, 9);
    be32(p + 4, 0x40000009);
    be16(p + 8, 0);
    p[10] = 0;
    be16(p + 11, 0);
    return 13;
}

static long send(int fd, unsigned char *cmd, unsigned len)
{
    unsigned char rsp[1024];
    be32(cmd + 2, len);
    if (write(fd, cmd, len) != (ssize_t)len || read(fd, rsp, sizeof(rsp)) < 10)
        return -1;
    return (long)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9];
}

static long command(int fd, const char *what, unsigned handle)
{
    unsigned char cmd[64];
    unsigned len = 10;
    if (!strcmp(what, "ReadPublic")) {
        be16(cmd, 0x8001);
        be32(cmd + 6, 0x173);
        be32(cmd + len, handle);
        len += 4;
    } else if (!strcmp(what, "Unseal")) {
        be16(cmd, 0x8002);
        be32(cmd + 6, 0x15E);
        be32(cmd + len, handle);
        len += 4;
        len += pw_session(cmd + len);
    } else if (!strcmp(what, "EvictControl")) {
        be16(cmd, 0x8002);
        be32(cmd + 6, 0x120);
        be32(cmd + len, 0x40000001);        /* TPM_RH_OWNER */
        be32(cmd + len + 4, handle);
        len += 8;
        len += pw_session(cmd + len);
        be32(cmd + len, handle);            /* persistentHandle */
        len += 4;
    } else if (!strcmp(what, "Clear")) {
        be16(cmd, 0x8002);
        be32(cmd + 6, 0x126);
        be32(cmd + len, 0x4000000A);        /* TPM_RH_LOCKOUT */
        len += 4;
        len += pw_session(cmd + len);
    } else {
        return -2;
    }
    return send(fd, cmd, len);
}

int main(int argc, char **argv)
{
    int fd = open("/dev/tpm0", O_RDWR);
    if (fd < 0 || argc < 2) {
        printf("usage: tpm_probe ReadPublic|Unseal|EvictControl HANDLE... | Clear\n");
        return 2;
    }
    for (int i = 2; i < argc || i == 2; i++) {
        unsigned handle = i < argc ? (unsigned)strtoul(argv[i], NULL, 0) : 0;
        long rc = command(fd, argv[1], handle);
        if (i < argc)
            printf("tpm_probe: %s %#x rc=%#lx\n", argv[1], handle, rc);
        else
            printf("tpm_probe: %s rc=%#lx\n", argv[1], rc);
        if (i >= argc)
            break;
    }
    close(fd);
    return 0;
}
