/*
 * Kernel command line. Parameters are registered with __setup("name", fn) (any file);
 * unknown ones are reported like Linux and otherwise ignored.
 */
#include "kernel.h"
#include "mm.h"

extern const struct kernel_param __setup_start[], __setup_end[];

bool cmdline_shell;
const char *cmdline_init;
static char init_path[128];

/* "256M" -> bytes (K, M, G, T suffixes; decimal or 0x hex) */
u64 memparse(const char *s, const char **end)
{
    const char *e;
    u64 v = simple_strtoull(s, &e, 0);
    switch (*e) {
    case 'T': case 't': v <<= 10; /* fall through */
    case 'G': case 'g': v <<= 10; /* fall through */
    case 'M': case 'm': v <<= 10; /* fall through */
    case 'K': case 'k': v <<= 10; e++; break;
    default: break;
    }
    if (end)
        *end = e;
    return v;
}

/* memmap=nn[KMG]@ss (usable), #ss (ACPI), $ss (reserved), !ss (persistent) */
static int setup_memmap(const char *val)
{
    if (!val)
        return -EINVAL;
    if (!strcmp(val, "exactmap")) {
        printk("memmap=exactmap is not supported, ignored\n");
        return 0;
    }
    const char *p;
    u64 size = memparse(val, &p);
    if (*p == '\\')              /* tolerate "\$" escaping from boot loader configs */
        p++;
    char kind = *p;
    if (!kind || p == val) {
        printk("memmap=%s: malformed, ignored\n", val);
        return -EINVAL;
    }
    u64 start = memparse(p + 1, NULL);
    u32 type;
    switch (kind) {
    case '@': type = E820_TYPE_RAM; break;
    case '#': type = E820_TYPE_ACPI; break;
    case '$': type = E820_TYPE_RESERVED; break;
    case '!': type = E820_TYPE_PRAM; break;
    default:
        printk("memmap=%s: unknown type '%c', ignored\n", val, kind);
        return -EINVAL;
    }
    e820_add_user_range(start, size, type);
    return 0;
}
__setup("memmap", setup_memmap);

static int setup_init(const char *val)
{
    if (val && *val) {
        strlcpy(init_path, val, sizeof(init_path));
        cmdline_init = init_path;
    }
    return 0;
}
__setup("init", setup_init);

static int setup_shell(const char *val)
{
    (void)val;
    cmdline_shell = true;
    return 0;
}
__setup("shell", setup_shell);

static int setup_ignored(const char *val)
{
    (void)val;
    return 0;
}
__setup("console", setup_ignored);
__setup("quiet", setup_ignored);
__setup("loglevel", setup_ignored);
__setup("earlyprintk", setup_ignored);
__setup("nokaslr", setup_ignored);
__setup("debug", setup_ignored);
__setup("panic", setup_ignored);
__setup("rdinit", setup_ignored);

static const struct kernel_param *find_param(const char *name, size_t len)
{
    for (const struct kernel_param *p = __setup_start; p < __setup_end; p++) {
        size_t n = strlen(p->name);
        if (n && p->name[n - 1] == '.') {        /* "prefix." matches "prefix.anything" */
            if (len > n && !strncmp(name, p->name, n))
                return p;
        } else if (n == len && !strncmp(name, p->name, n)) {
            return p;
        }
    }
    return NULL;
}

/* Tokens are separated by spaces; "key=value" or "key"; double quotes group a value. */
void parse_cmdline(void)
{
    static char work[BOOT_CMDLINE_MAX];
    char unknown[512];
    size_t ulen = 0;
    unknown[0] = 0;
    strlcpy(work, boot_command_line, sizeof(work));
    char *p = work;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n')
            p++;
        if (!*p)
            break;
        char *tok = p;
        bool quoted = false;
        while (*p && (quoted || (*p != ' ' && *p != '\t' && *p != '\n'))) {
            if (*p == '"')
                quoted = !quoted;
            p++;
        }
        if (*p)
            *p++ = 0;
        char *eq = strchr(tok, '=');
        size_t klen = eq ? (size_t)(eq - tok) : strlen(tok);
        char *val = eq ? eq + 1 : NULL;
        if (val && val[0] == '"') {
            val++;
            size_t vl = strlen(val);
            if (vl && val[vl - 1] == '"')
                val[vl - 1] = 0;
        }
        const struct kernel_param *kp = find_param(tok, klen);
        size_t plen = kp ? strlen(kp->name) : 0;
        if (kp && kp->name[plen - 1] == '.') {
            kp->setup(tok + plen);       /* "prefix.rest=value" -> "rest=value" */
        } else if (kp) {
            kp->setup(val);
        } else {
            if (eq)
                *eq = '=';
            size_t tl = strlen(tok);
            if (ulen + tl + 2 < sizeof(unknown)) {
                if (ulen)
                    unknown[ulen++] = ' ';
                memcpy(unknown + ulen, tok, tl);
                ulen += tl;
                unknown[ulen] = 0;
            }
        }
    }
    if (ulen)
        printk("Unknown kernel command line parameters \"%s\", will be passed to user space.\n",
               unknown);
}

/* true when the whole word (or "word=...") is on the command line */
bool cmdline_has(const char *word)
{
    size_t n = strlen(word);
    const char *p = boot_command_line;
    while (*p) {
        while (*p == ' ')
            p++;
        if (!strncmp(p, word, n) && (p[n] == 0 || p[n] == ' ' || p[n] == '='))
            return true;
        while (*p && *p != ' ')
            p++;
    }
    return false;
}
