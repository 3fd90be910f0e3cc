/* TPM 2.0 CRB driver (TCG PC Client PTP, locality 0) and the measurement log.
 *
 * Commands are built here, in guest code, and go to the TPM through the CRB registers; the
 * matching TCG_PCR_EVENT2 is appended to the firmware's crypto-agile log, whose size the live
 * boot_params at BOOT_PARAMS_ADDR records for whoever exports the log.
 *
 * /dev/tpm0 is Linux's raw TPM character device: write(2) one command, read(2) its response. */
#include "tpm.h"
#include "bootparam.h"
#include "fs.h"

#define CRB_LOC_STATE    0x00
#define CRB_LOC_CTRL     0x08
#define CRB_LOC_STS      0x0C
#define CRB_CTRL_START   0x4C
#define CRB_DATA_BUFFER  0x80
#define CRB_BUFFER_SIZE  (0x1000 - CRB_DATA_BUFFER)
#define TPM_ST_SESSIONS  0x8002
#define TPM_CC_PCR_EXTEND 0x182
#define TPM_RS_PW        0x40000009
#define TPM_ALG_SHA256   0x000B

static volatile u8 *crb(void) { return (volatile u8 *)__va(TPM_CRB_BASE); }
static u32 rd32(u32 off) { return *(volatile u32 *)(crb() + off); }
static void wr32(u32 off, u32 v) { *(volatile u32 *)(crb() + off) = v; }
static void put_be16(u8 *p, u16 v) { p[0] = v >> 8; p[1] = v; }
static void put_be32(u8 *p, u32 v) { p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v; }
static u32 get_be32(const u8 *p) { return (u32)p[0] << 24 | (u32)p[1] << 16 | (u32)p[2] << 8 | p[3]; }

static bool tpm_ready;

static bool tpm_request_locality(void)
{
    if (tpm_ready)
        return true;
    if (!(rd32(CRB_LOC_STATE) & 0x80))
        return false;          /* tpmRegValidSts clear: no TPM behind the CRB */
    wr32(CRB_LOC_CTRL, 1);
    for (int i = 0; i < 1000 && !(rd32(CRB_LOC_STS) & 1); i++)
        ;
    tpm_ready = rd32(CRB_LOC_STS) & 1;
    if (tpm_ready)
        printk("tpm_crb: TPM 2.0 (CRB) at %#lx, locality 0\n", (u64)TPM_CRB_BASE);
    return tpm_ready;
}

long tpm_transmit(const u8 *cmd, u32 len, u8 *rsp, u32 rsp_max)
{
    if (!tpm_request_locality())
        return -ENODEV;
    if (len > CRB_BUFFER_SIZE || rsp_max < 10)
        return -EINVAL;
    volatile u8 *buf = crb() + CRB_DATA_BUFFER;
    for (u32 i = 0; i < len; i++)
        buf[i] = cmd[i];
    wr32(CRB_CTRL_START, 1);
    for (int i = 0; i < 100000 && (rd32(CRB_CTRL_START) & 1); i++)
        ;
    if (rd32(CRB_CTRL_START) & 1)
        return -EIO;
    for (u32 i = 0; i < 10; i++)
        rsp[i] = buf[i];
    u32 size = get_be32(rsp + 2);
    if (size < 10 || size > rsp_max)
        return -EIO;
    for (u32 i = 10; i < size; i++)
        rsp[i] = buf[i];
    return get_be32(rsp + 6);
}

long tpm_pcr_extend(u32 pcr, const u8 digest[SHA256_DIGEST_SIZE])
{
    u8 cmd[65], rsp[64];
    put_be16(cmd, TPM_ST_SESSIONS);
    put_be32(cmd + 2, sizeof(cmd));
    put_be32(cmd + 6, TPM_CC_PCR_EXTEND);
    put_be32(cmd + 10, pcr);
    put_be32(cmd + 14, 9);                 /* authorizationSize: one password session */
    put_be32(cmd + 18, TPM_RS_PW);
    put_be16(cmd + 22, 0);                 /* nonce */
    cmd[24] = 0;                           /* session attributes */
    put_be16(cmd + 25, 0);                 /* empty password */
    put_be32(cmd + 27, 1);                 /* TPML_DIGEST_VALUES.count */
    put_be16(cmd + 31, TPM_ALG_SHA256);
    memcpy(cmd + 33, digest, SHA256_DIGEST_SIZE);
    return tpm_transmit(cmd, sizeof(cmd), rsp, sizeof(rsp));
}

static void put_le32(u8 *p, u32 v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }

long tpm_measure(u32 pcr, u32 event_type, const u8 digest[SHA256_DIGEST_SIZE],
                 const void *event, u32 event_len)
{
    struct boot_params *live = __va(BOOT_PARAMS_ADDR);
    u64 need = 4 + 4 + 4 + 2 + SHA256_DIGEST_SIZE + 4 + event_len;
    if (!live->eventlog_addr || live->eventlog_size + need > live->eventlog_max) {
        printk("tpm: event log full, not measuring into PCR%u\n", pcr);
        return -ENOMEM;
    }
    long rc = tpm_pcr_extend(pcr, digest);
    if (rc) {
        printk("tpm: PCR%u extend failed: %ld\n", pcr, rc);
        return rc < 0 ? rc : -EIO;
    }
    u8 *p = (u8 *)__va(live->eventlog_addr) + live->eventlog_size;
    put_le32(p, pcr);
    put_le32(p + 4, event_type);
    put_le32(p + 8, 1);                    /* digests.count */
    p[12] = TPM_ALG_SHA256 & 0xff;         /* TPMI_ALG_HASH, little-endian in the log */
    p[13] = TPM_ALG_SHA256 >> 8;
    memcpy(p + 14, digest, SHA256_DIGEST_SIZE);
    put_le32(p + 14 + SHA256_DIGEST_SIZE, event_len);
    memcpy(p + 18 + SHA256_DIGEST_SIZE, event, event_len);
    live->eventlog_size += need;
    return 0;
}

/* /dev/tpm0: one command in flight, its response kept until read */
static u8 tpm_dev_cmd[CRB_BUFFER_SIZE], tpm_dev_rsp[CRB_BUFFER_SIZE];
static u32 tpm_dev_rsp_len;

static long tpm_dev_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    if (count < 10 || count > sizeof(tpm_dev_cmd))
        return -EINVAL;
    if (copy_from_user(tpm_dev_cmd, ubuf, count))
        return -EFAULT;
    long rc = tpm_transmit(tpm_dev_cmd, (u32)count, tpm_dev_rsp, sizeof(tpm_dev_rsp));
    if (rc < 0)
        return rc;
    tpm_dev_rsp_len = get_be32(tpm_dev_rsp + 2);
    return (long)count;
}

static long tpm_dev_read(struct file *f, char *ubuf, u64 count)
{
    (void)f;
    u64 n = MIN(count, (u64)tpm_dev_rsp_len);
    if (n && copy_to_user(ubuf, tpm_dev_rsp, n))
        return -EFAULT;
    tpm_dev_rsp_len = 0;
    return (long)n;
}

static const struct file_operations tpm_dev_fops = {.read = tpm_dev_read, .write = tpm_dev_write};

static int tpm_dev_init(void)
{
    return register_device("/dev/tpm0", &tpm_dev_fops, NULL);
}
device_initcall(tpm_dev_init);
