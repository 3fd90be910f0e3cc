/* Time: the virtual TSC (boot_params.tsc_khz) and the 8254 PIT at HZ. */
#include "kernel.h"
#include "sched.h"

#define PIT_HZ 1193182UL

volatile u64 jiffies;
u64 tsc_khz = 1000000;   /* until time_init() reads boot_params */

u64 ktime_get_ns(void)
{
    u64 t = rdtsc();
    u64 per_sec = tsc_khz * 1000;
    u64 sec = t / per_sec;
    u64 rem = t % per_sec;           /* < per_sec: rem * 1e6 fits easily for tsc_khz < 1.8e7 */
    return sec * 1000000000UL + rem * 1000000UL / tsc_khz;
}

u64 ns_to_tsc(u64 ns)
{
    u64 sec = ns / 1000000000UL;
    u64 rem = ns % 1000000000UL;
    return sec * tsc_khz * 1000 + rem * tsc_khz / 1000000UL;
}

static void timer_interrupt(struct pt_regs *regs)
{
    outb(0x20, 0x20);   /* EOI first: we may switch away below */
    jiffies++;
    serial_poll();      /* in case the UART interrupt is not wired */
    timer_tick();
    if (user_mode(regs) && current && --current->ticks_left <= 0) {
        current->ticks_left = TIMESLICE_TICKS;
        schedule();     /* round robin: preempt the user process */
    }
}

void time_init(void)
{
    if (boot_params.tsc_khz)
        tsc_khz = boot_params.tsc_khz;
    printk("tsc: Detected %lu.%03lu MHz processor\n", (unsigned long)(tsc_khz / 1000),
           (unsigned long)(tsc_khz % 1000));
    u32 divisor = (u32)((PIT_HZ + HZ / 2) / HZ);
    outb(0x43, 0x34);                /* channel 0, lobyte/hibyte, mode 2 (rate generator) */
    outb(0x40, divisor & 0xff);
    outb(0x40, divisor >> 8);
    request_irq(0x20, timer_interrupt);
    printk("clocksource: pit: %u Hz timer (divisor %u), vector 0x20\n", (unsigned)HZ, divisor);
}
