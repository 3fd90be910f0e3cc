/*
 * 16550 UART on COM1 (0x3f8, IRQ4 = vector 0x24) and the console tty on top of it:
 * canonical line input with echo, backspace, ^U (kill line), ^C (SIGINT to the foreground
 * process) and ^D (end of file). /dev/console and /dev/ttyS0 are this tty.
 */
#include "kernel.h"
#include "sched.h"
#include "fs.h"

#define COM1      0x3f8
#define UART_RBR  (COM1 + 0)
#define UART_THR  (COM1 + 0)
#define UART_IER  (COM1 + 1)
#define UART_LSR  (COM1 + 5)
#define LSR_DR    0x01
#define LSR_THRE  0x20

#define TTY_BUF   2048
#define LINE_MAX  512

static char ready[TTY_BUF];          /* cooked input waiting for a reader */
static u32 ready_head, ready_tail;    /* ring: head == tail means empty */
static int eof_count;
static char line[LINE_MAX];
static u32 line_len;
static bool last_cr;

void serial_putc(char c)
{
    while (!(inb(UART_LSR) & LSR_THRE))
        ;
    outb(UART_THR, (u8)c);
}

static void echo(const char *s)
{
    while (*s)
        serial_putc(*s++);
}

static void commit_line(void)
{
    for (u32 i = 0; i < line_len; i++) {
        u32 next = (ready_head + 1) % TTY_BUF;
        if (next == ready_tail)
            break;                   /* full: drop */
        ready[ready_head] = line[i];
        ready_head = next;
    }
    line_len = 0;
}

static void tty_receive(u8 c)
{
    if (c == '\n' && last_cr) {      /* "\r\n" is one newline */
        last_cr = false;
        return;
    }
    last_cr = c == '\r';
    switch (c) {
    case '\r':
    case '\n':
        if (line_len < LINE_MAX)
            line[line_len++] = '\n';
        echo("\n");
        commit_line();
        break;
    case 0x7f:
    case 0x08:
        if (line_len) {
            line_len--;
            echo("\b \b");
        }
        break;
    case 0x15:                       /* ^U */
        while (line_len) {
            line_len--;
            echo("\b \b");
        }
        break;
    case 0x03: {                     /* ^C */
        echo("^C\n");
        line_len = 0;
        struct task *t = fg_pid ? find_task(fg_pid) : NULL;
        if (t && t->state != TASK_ZOMBIE) {
            t->pending_signal = SIGINT;
            if (t->state == TASK_BLOCKED) {
                t->state = TASK_RUNNABLE;
                t->wait = WAIT_NONE;
            }
        }
        break;
    }
    case 0x04:                       /* ^D */
        if (line_len)
            commit_line();
        else
            eof_count++;
        break;
    default:
        if ((c >= 0x20 && c < 0x7f) || c == '\t') {
            if (line_len < LINE_MAX - 1) {
                line[line_len++] = (char)c;
                serial_putc((char)c);
            }
        }
        break;
    }
}

void serial_poll(void)
{
    bool got = false;
    while (inb(UART_LSR) & LSR_DR) {
        tty_receive(inb(UART_RBR));
        got = true;
    }
    if (got)
        wake_up(WAIT_TTY);
}

static void serial_interrupt(struct pt_regs *regs)
{
    (void)regs;
    outb(0x20, 0x20);
    serial_poll();
}

void serial_init(void)
{
    outb(UART_IER, 0x01);            /* interrupt on received data */
    request_irq(0x24, serial_interrupt);
    printk("Serial: 8250/16550 driver, 1 ports, IRQ sharing disabled\n");
    printk("serial8250: ttyS0 at I/O 0x3f8 (irq = 4, base_baud = 115200) is a 16550A\n");
}

/* Blocks until a line (or EOF) is available; returns at most one line. -EINTR on a signal. */
long tty_read(char *kbuf, u64 count)
{
    for (;;) {
        serial_poll();
        if (ready_head != ready_tail) {
            u64 n = 0;
            while (n < count && ready_head != ready_tail) {
                char c = ready[ready_tail];
                ready_tail = (ready_tail + 1) % TTY_BUF;
                kbuf[n++] = c;
                if (c == '\n')
                    break;
            }
            return (long)n;
        }
        if (eof_count) {
            eof_count--;
            return 0;
        }
        if (current->pending_signal)
            return -EINTR;
        block_current(WAIT_TTY);
    }
}

void tty_write(const char *kbuf, u64 count)
{
    for (u64 i = 0; i < count; i++)
        serial_putc(kbuf[i]);
}

static long console_read(struct file *f, char *ubuf, u64 count)
{
    (void)f;
    char buf[LINE_MAX];
    if (count > sizeof(buf))
        count = sizeof(buf);
    long n = tty_read(buf, count);
    if (n > 0 && copy_to_user(ubuf, buf, (u64)n))
        return -EFAULT;
    return n;
}

static long console_write(struct file *f, const char *ubuf, u64 count)
{
    (void)f;
    char buf[256];
    u64 done = 0;
    while (done < count) {
        u64 n = MIN(count - done, sizeof(buf));
        if (copy_from_user(buf, ubuf + done, n))
            return done ? (long)done : -EFAULT;
        tty_write(buf, n);
        done += n;
    }
    return (long)done;
}

static long console_ioctl(struct file *f, unsigned int cmd, unsigned long arg)
{
    (void)f;
    (void)arg;
    if (cmd == 0x5401)   /* TCGETS: "is a tty" */
        return 0;
    return -ENOTTY;
}

static const struct file_operations console_fops = {
    .read = console_read,
    .write = console_write,
    .ioctl = console_ioctl,
};

static int console_register(void)
{
    register_device("/dev/console", &console_fops, NULL);
    return register_device("/dev/ttyS0", &console_fops, NULL);
}
device_initcall(console_register);
