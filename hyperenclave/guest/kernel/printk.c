/* printk: to the UART, with dmesg-style "[    1.234567] " timestamps at each line start. */
#include "kernel.h"

static bool at_line_start = true;

void printk_raw(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        serial_putc(s[i]);
}

static void emit_timestamp(u64 ns)
{
    char ts[32];
    u64 us = ns / 1000;
    int n = snprintf(ts, sizeof(ts), "[%5lu.%06lu] ", (unsigned long)(us / 1000000),
                     (unsigned long)(us % 1000000));
    printk_raw(ts, (size_t)n);
}

void vprintk(const char *fmt, va_list ap)
{
    char buf[1024];
    u64 now = ktime_get_ns();
    int n = vsnprintf(buf, sizeof(buf), fmt, ap);
    if (n > (int)sizeof(buf) - 1)
        n = sizeof(buf) - 1;
    for (int i = 0; i < n; i++) {
        if (at_line_start) {
            emit_timestamp(now);
            at_line_start = false;
        }
        serial_putc(buf[i]);
        if (buf[i] == '\n')
            at_line_start = true;
    }
}

void printk(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintk(fmt, ap);
    va_end(ap);
}

void machine_power_off(void)
{
    cli();
    printk("reboot: Power down\n");
    outw(0x604, 0x2000);            /* ACPI PM1a_CNT: SLP_TYP=S5 | SLP_EN */
    for (;;)
        __asm__ volatile("cli; hlt");
}

void machine_restart(void)
{
    cli();
    printk("reboot: Restarting system\n");
    outb(0xcf9, 0x06);
    for (;;)
        __asm__ volatile("cli; hlt");
}

void panic(const char *fmt, ...)
{
    char buf[256];
    va_list ap;
    cli();
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (!at_line_start)
        printk("\n");
    printk("Kernel panic - not syncing: %s\n", buf);
    printk("---[ end Kernel panic - not syncing: %s ]---\n", buf);
    machine_power_off();
}
