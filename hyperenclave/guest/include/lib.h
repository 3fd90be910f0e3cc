/* Freestanding helpers shared by the kernel and the user libc (the files in lib/ are compiled into both). */
#ifndef HYPERENCLAVE_LIB_H
#define HYPERENCLAVE_LIB_H

#include <stddef.h>
#include <stdarg.h>
#include <stdint.h>

void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strchr(const char *s, int c);
char *strrchr(const char *s, int c);
char *strcpy(char *dst, const char *src);
size_t strlcpy(char *dst, const char *src, size_t size);
char *strncpy(char *dst, const char *src, size_t n);
unsigned long long simple_strtoull(const char *s, const char **end, unsigned int base);
long long simple_strtoll(const char *s, const char **end, unsigned int base);

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
