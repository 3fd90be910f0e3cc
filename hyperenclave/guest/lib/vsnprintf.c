/*
 * A small vsnprintf: %s %c %d %i %u %x %X %o %p %%, flags '-' '0' '+' ' ' '#',
 * width and precision (numbers or '*'), length modifiers hh h l ll L z t j.
 */
#include "lib.h"

struct out {
    char *buf;
    size_t size;
    size_t pos;
};

static void put(struct out *o, char c)
{
    if (o->pos + 1 < o->size)
        o->buf[o->pos] = c;
    o->pos++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        put(o, c);
}

#define F_LEFT  1
#define F_ZERO  2
#define F_PLUS  4
#define F_SPACE 8
#define F_ALT   16
#define F_UPPER 32

static void number(struct out *o, unsigned long long v, unsigned base, int neg, int flags,
                   int width, int prec)
{
    char tmp[24];
    const char *digits = (flags & F_UPPER) ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    if (v == 0 && prec == 0) {
        /* "%.0d" of 0 prints nothing */
    } else {
        do {
            tmp[n++] = digits[v % base];
            v /= base;
        } while (v);
    }
    char sign = 0;
    if (neg)
        sign = '-';
    else if (flags & F_PLUS)
        sign = '+';
    else if (flags & F_SPACE)
        sign = ' ';
    const char *prefix = "";
    if (flags & F_ALT) {
        if (base == 16)
            prefix = (flags & F_UPPER) ? "0X" : "0x";
        else if (base == 8)
            prefix = "0";
    }
    int plen = (sign ? 1 : 0) + (int)strlen(prefix);
    int zeros = prec > n ? prec - n : 0;
    if (prec < 0 && (flags & F_ZERO) && !(flags & F_LEFT) && width > n + plen)
        zeros = width - n - plen;
    int total = n + zeros + plen;
    if (!(flags & F_LEFT))
        pad(o, ' ', width - total);
    if (sign)
        put(o, sign);
    while (*prefix)
        put(o, *prefix++);
    pad(o, '0', zeros);
    while (n)
        put(o, tmp[--n]);
    if (flags & F_LEFT)
        pad(o, ' ', width - total);
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = {buf, size, 0};
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            put(&o, *fmt);
            continue;
        }
        fmt++;
        int flags = 0;
        for (;; fmt++) {
            if (*fmt == '-')
                flags |= F_LEFT;
            else if (*fmt == '0')
                flags |= F_ZERO;
            else if (*fmt == '+')
                flags |= F_PLUS;
            else if (*fmt == ' ')
                flags |= F_SPACE;
            else if (*fmt == '#')
                flags |= F_ALT;
            else
                break;
        }
        int width = 0;
        if (*fmt == '*') {
            width = va_arg(ap, int);
            if (width < 0) {
                flags |= F_LEFT;
                width = -width;
            }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9')
                width = width * 10 + (*fmt++ - '0');
        }
        int prec = -1;
        if (*fmt == '.') {
            fmt++;
            prec = 0;
            if (*fmt == '*') {
                prec = va_arg(ap, int);
                fmt++;
            } else {
                while (*fmt >= '0' && *fmt <= '9')
                    prec = prec * 10 + (*fmt++ - '0');
            }
        }
        int lng = 0; /* 0 int, 1 long, 2 long long, -1 short, -2 char */
        for (;; fmt++) {
            if (*fmt == 'l')
                lng++;
            else if (*fmt == 'L' || *fmt == 'z' || *fmt == 't' || *fmt == 'j')
                lng = 2;
            else if (*fmt == 'h')
                lng--;
            else
                break;
        }
        char c = *fmt;
        unsigned base = 10;
        int is_signed = 0;
        switch (c) {
        case 0:
            goto done;
        case '%':
            put(&o, '%');
            continue;
        case 'c': {
            char ch = (char)va_arg(ap, int);
            if (!(flags & F_LEFT))
                pad(&o, ' ', width - 1);
            put(&o, ch);
            if (flags & F_LEFT)
                pad(&o, ' ', width - 1);
            continue;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int len = (int)(prec >= 0 ? strnlen(s, (size_t)prec) : strlen(s));
            if (!(flags & F_LEFT))
                pad(&o, ' ', width - len);
            for (int i = 0; i < len; i++)
                put(&o, s[i]);
            if (flags & F_LEFT)
                pad(&o, ' ', width - len);
            continue;
        }
        case 'p':
            number(&o, (unsigned long long)(uintptr_t)va_arg(ap, void *), 16, 0, flags | F_ALT,
                   width, prec);
            continue;
        case 'd':
        case 'i':
            is_signed = 1;
            break;
        case 'u':
            break;
        case 'X':
            flags |= F_UPPER;
            /* fall through */
        case 'x':
            base = 16;
            break;
        case 'o':
            base = 8;
            break;
        default:
            put(&o, '%');
            put(&o, c);
            continue;
        }
        unsigned long long v;
        int neg = 0;
        if (is_signed) {
            long long sv;
            if (lng >= 2)
                sv = va_arg(ap, long long);
            else if (lng == 1)
                sv = va_arg(ap, long);
            else
                sv = va_arg(ap, int);
            if (lng == -1)
                sv = (short)sv;
            else if (lng <= -2)
                sv = (signed char)sv;
            if (sv < 0) {
                neg = 1;
                v = -(unsigned long long)sv;
            } else {
                v = (unsigned long long)sv;
            }
        } else {
            if (lng >= 2)
                v = va_arg(ap, unsigned long long);
            else if (lng == 1)
                v = va_arg(ap, unsigned long);
            else
                v = va_arg(ap, unsigned int);
            if (lng == -1)
                v = (unsigned short)v;
            else if (lng <= -2)
                v = (unsigned char)v;
        }
        number(&o, v, base, neg, flags, width, prec);
    }
done:
    if (o.size)
        o.buf[o.pos < o.size ? o.pos : o.size - 1] = 0;
    return (int)o.pos;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
