/* Open files: devices registered by path, initramfs regular files, per-task fd tables. */
#include "fs.h"

#define MAX_DEVICES 16
#define MAX_FILES   128

struct device {
    const char *path;
    const struct file_operations *fops;
    void *data;
};

static struct device devices[MAX_DEVICES];
static int nr_devices;
static struct file file_pool[MAX_FILES];

int register_device(const char *path, const struct file_operations *fops, void *data)
{
    if (nr_devices >= MAX_DEVICES)
        return -ENOSPC;
    for (int i = 0; i < nr_devices; i++)
        if (!strcmp(devices[i].path, path))
            return -EEXIST;
    devices[nr_devices].path = path;
    devices[nr_devices].fops = fops;
    devices[nr_devices].data = data;
    nr_devices++;
    return 0;
}

static struct file *file_alloc(void)
{
    for (int i = 0; i < MAX_FILES; i++) {
        if (!file_pool[i].refcount) {
            memset(&file_pool[i], 0, sizeof(file_pool[i]));
            file_pool[i].refcount = 1;
            return &file_pool[i];
        }
    }
    return NULL;
}

static long regular_read(struct file *f, char *ubuf, u64 count)
{
    if (f->pos >= f->size)
        return 0;
    u64 n = MIN(count, f->size - f->pos);
    if (copy_to_user(ubuf, f->data + f->pos, n))
        return -EFAULT;
    f->pos += n;
    return (long)n;
}

static const struct file_operations regular_fops = {
    .read = regular_read,
};

struct file *file_open(const char *path, int flags, int *err)
{
    struct file *f;
    for (int i = 0; i < nr_devices; i++) {
        if (strcmp(devices[i].path, path))
            continue;
        f = file_alloc();
        if (!f) {
            *err = -ENFILE;
            return NULL;
        }
        f->f_op = devices[i].fops;
        f->dev_data = devices[i].data;
        f->flags = flags;
        if (f->f_op->open) {
            int e = f->f_op->open(f);
            if (e) {
                f->refcount = 0;
                *err = e;
                return NULL;
            }
        }
        return f;
    }
    const u8 *data;
    u64 size;
    if (initramfs_find(path, &data, &size)) {
        *err = -ENOENT;
        return NULL;
    }
    if ((flags & O_ACCMODE) != O_RDONLY) {
        *err = -EPERM;   /* the initramfs is read-only here */
        return NULL;
    }
    f = file_alloc();
    if (!f) {
        *err = -ENFILE;
        return NULL;
    }
    f->f_op = &regular_fops;
    f->data = data;
    f->size = size;
    f->flags = flags;
    return f;
}

void file_get(struct file *f)
{
    f->refcount++;
}

void file_put(struct file *f)
{
    if (--f->refcount == 0 && f->f_op && f->f_op->release)
        f->f_op->release(f);
}

int fd_install(struct task *t, struct file *f)
{
    for (int fd = 0; fd < NR_OPEN; fd++) {
        if (!t->files[fd]) {
            t->files[fd] = f;
            return fd;
        }
    }
    return -EMFILE;
}

struct file *fd_get(int fd)
{
    if (fd < 0 || fd >= NR_OPEN)
        return NULL;
    return current->files[fd];
}

void files_close_all(struct task *t)
{
    for (int fd = 0; fd < NR_OPEN; fd++) {
        if (t->files[fd]) {
            struct file *f = t->files[fd];
            t->files[fd] = NULL;
            file_put(f);
        }
    }
}

void console_files_init(struct task *t)
{
    int err;
    struct file *f = file_open("/dev/console", O_RDWR, &err);
    if (!f)
        return;
    t->files[0] = f;
    file_get(f);
    t->files[1] = f;
    file_get(f);
    t->files[2] = f;
}
