/*
 * tpm_pcrextend PCR...: TPM2_PCR_Extend of each PCR's sha256 bank with a fixed digest, sent
 * through /dev/tpm0 (like tpm2_pcrextend with the device TCTI). Prints the response code of
 * each: "tpm_pcrextend: PCR13 rc=0x907". Exit status 1 if any extend was not TPM_RC_SUCCESS.
 */
#include "libc.h"

static void put_be16(unsigned char *p, unsigned v) { p[0] = v >> 8; p[1] = v; }
static void put_be32(unsigned char *p, unsigned v)
{
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static long extend(int fd, unsigned pcr)
{
    unsigned char cmd[65], rsp[64];
    put_be16(cmd, 0x8002);                 /* TPM_ST_SESSIONS */
    put_be32(cmd + 2, sizeof(cmd));
    put_be32(cmd + 6, 0x182);              /* TPM_CC_PCR_Extend */
    put_be32(cmd + 10, pcr);
    put_be32(cmd + 14, 9);                 /* one password session, empty auth */
    put_be32(cmd + 18, 0x40000009);
    put_be16(cmd + 22, 0);
    cmd[24] = 0;
    put_be16(cmd + 25, 0);
    put_be32(cmd + 27, 1);                 /* TPML_DIGEST_VALUES: one sha256 digest */
    put_be16(cmd + 31, 0x000B);
    for (int i = 0; i < 32; i++)
        cmd[33 + i] = 0xA5;
    if (write(fd, cmd, sizeof(cmd)) != (ssize_t)sizeof(cmd))
        return -1;
    if (read(fd, rsp, sizeof(rsp)) < 10)
        return -1;
    return (long)rsp[6] << 24 | rsp[7] << 16 | rsp[8] << 8 | rsp[9];
}

int main(int argc, char **argv)
{
    int fd = open("/dev/tpm0", O_RDWR);
    if (fd < 0) {
        dprintf(2, "tpm_pcrextend: /dev/tpm0: %s\n", strerror(errno));
        return 1;
    }
    int status = 0;
    for (int i = 1; i < argc; i++) {
        unsigned pcr = (unsigned)strtoul(argv[i], NULL, 0);
        long rc = extend(fd, pcr);
        if (rc < 0) {
            dprintf(2, "tpm_pcrextend: PCR%u: I/O error\n", pcr);
            return 1;
        }
        printf("tpm_pcrextend: PCR%u rc=%#lx\n", pcr, rc);
        if (rc)
            status = 1;
    }
    close(fd);
    return status;
}
