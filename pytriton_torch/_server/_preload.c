/* LD_PRELOAD library that pytriton_torch loads into tritonserver and its Python-backend stubs.
 *
 * 1. Secrets off the command line. The owner starts tritonserver with placeholders
 *    "@@PTT_SECRET_<n>@@" where admin tokens go, and the values in environment variables
 *    PTT_SECRET_<n> (/proc/<pid>/environ is readable by the same user only). Before main() runs,
 *    every argv pointer holding a placeholder is pointed at a heap copy with the value put in:
 *    main() parses the real token, while /proc/<pid>/cmdline, which shows the kernel's argument
 *    area, keeps showing the placeholder. The variables' bytes are then wiped and the variables
 *    unset, so that no child process inherits them.
 * 2. Private shared memory. The Python backend creates its regions with shm_open(..., 0644) and
 *    fchmod(0644). shm_open(O_CREAT) here creates with the owner bits only, and fchmod on a
 *    /dev/shm file drops the group and other bits: no region is ever open to other users.
 * 3. No orphans. In triton_python_backend_stub, a thread ends the process as soon as its parent
 *    (tritonserver) is gone: a stub blocked in a futex on shared memory otherwise waits forever.
 *    Each process tells its children its pid (PTT_PARENT_PID), so that a stub whose server died
 *    even before this library ran in it still sees the difference.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define PLACEHOLDER "@@PTT_SECRET_"
#define PLACEHOLDER_END "@@"
#define SECRET_VAR "PTT_SECRET_"
#define STUB_NAME "triton_python_backend_stub"
#define PARENT_VAR "PTT_PARENT_PID"
#define WATCH_PERIOD_NS (100 * 1000 * 1000)
#define MAX_DIGITS 6

extern char **environ;

static void fail(const char *what)
{
    fprintf(stderr, "pytriton_torch preload: %s\n", what);
    _exit(2); /* fail closed: a server must never run with a placeholder as its token */
}

/* Appends the value of the placeholder starting at `at`, returns the text after it. */
static const char *put_secret(FILE *out, const char *at)
{
    const char *digits = at + strlen(PLACEHOLDER);
    size_t count = strspn(digits, "0123456789");
    if (count == 0 || count > MAX_DIGITS || strncmp(digits + count, PLACEHOLDER_END, 2) != 0)
        fail("malformed secret placeholder in the arguments");
    char name[sizeof(SECRET_VAR) + MAX_DIGITS];
    snprintf(name, sizeof name, "%s%.*s", SECRET_VAR, (int)count, digits);
    const char *value = getenv(name);
    if (value == NULL)
        fail("a secret placeholder in the arguments has no value in the environment");
    fputs(value, out);
    return digits + count + strlen(PLACEHOLDER_END);
}

/* A heap copy of `arg` with every placeholder replaced by its value. */
static char *substitute(const char *arg)
{
    char *copy = NULL;
    size_t size = 0;
    FILE *out = open_memstream(&copy, &size);
    if (out == NULL)
        fail("out of memory");
    for (const char *at; (at = strstr(arg, PLACEHOLDER)) != NULL;) {
        fwrite(arg, 1, (size_t)(at - arg), out);
        arg = put_secret(out, at);
    }
    fputs(arg, out);
    if (fclose(out) != 0)
        fail("out of memory");
    return copy; /* lives as long as the process, like argv itself */
}

static void reveal_secrets(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strstr(argv[i], PLACEHOLDER) != NULL)
            argv[i] = substitute(argv[i]);
}

static void wipe_secrets(void)
{
    for (;;) {
        char **entry = environ;
        while (*entry != NULL && strncmp(*entry, SECRET_VAR, strlen(SECRET_VAR)) != 0)
            entry++;
        if (*entry == NULL)
            return;
        char *equals = strchr(*entry, '=');
        if (equals == NULL)
            fail("malformed secret variable in the environment");
        /* The bytes live in the kernel-filled area that /proc/<pid>/environ shows: overwrite them. */
        memset(equals + 1, 0, strlen(equals + 1));
        *equals = '\0';
        char *name = strdup(*entry);
        if (name == NULL)
            fail("out of memory");
        *equals = '=';
        unsetenv(name);
        free(name);
    }
}

/* Resolves the next definition of a libc function once; atomics keep concurrent first calls defined. */
static void *next_symbol(void **slot, const char *name)
{
    void *found = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (found == NULL) {
        found = dlsym(RTLD_NEXT, name);
        if (found == NULL)
            fail("libc function not found");
        __atomic_store_n(slot, found, __ATOMIC_RELEASE);
    }
    return found;
}

int shm_open(const char *name, int oflag, mode_t mode)
{
    static void *next;
    int (*real)(const char *, int, mode_t) = (int (*)(const char *, int, mode_t))next_symbol(&next, "shm_open");
    if (oflag & O_CREAT)
        mode &= S_IRUSR | S_IWUSR;
    return real(name, oflag, mode);
}

static int on_dev_shm(int fd)
{
    struct stat file, shm;
    return fstat(fd, &file) == 0 && stat("/dev/shm", &shm) == 0 && file.st_dev == shm.st_dev;
}

int fchmod(int fd, mode_t mode)
{
    static void *next;
    int (*real)(int, mode_t) = (int (*)(int, mode_t))next_symbol(&next, "fchmod");
    if (on_dev_shm(fd))
        mode &= (mode_t)~(S_IRWXG | S_IRWXO);
    return real(fd, mode);
}

static pid_t watched_parent;

static void *watch_parent(void *unused)
{
    (void)unused;
    const struct timespec period = {0, WATCH_PERIOD_NS};
    /* Reparenting (to init or a subreaper) is the only way getppid() changes. */
    while (getppid() == watched_parent)
        nanosleep(&period, NULL);
    _exit(1);
    return NULL;
}

static void start_watchdog(pid_t parent)
{
    watched_parent = parent;
    sigset_t all, old;
    sigfillset(&all);
    /* The thread inherits a full mask: the stub's signals keep going to the stub's own threads. */
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t thread;
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0 || pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) != 0 ||
        pthread_create(&thread, &attr, watch_parent, NULL) != 0)
        fail("cannot start the parent watchdog thread");
    pthread_attr_destroy(&attr);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* The pid our parent told us, unless that is our own (a shell that exec'd us) or missing. */
static pid_t expected_parent(void)
{
    const char *told = getenv(PARENT_VAR);
    long parent = told == NULL ? 0 : strtol(told, NULL, 10);
    return parent > 0 && parent != (long)getpid() ? (pid_t)parent : getppid();
}

static int is_stub(const char *argv0)
{
    const char *slash = strrchr(argv0, '/');
    return strcmp(slash == NULL ? argv0 : slash + 1, STUB_NAME) == 0;
}

/* glibc calls ELF constructors with (argc, argv, envp), the same argv array that main() gets. */
__attribute__((constructor)) static void ptt_preload_init(int argc, char **argv, char **envp)
{
    (void)envp;
    reveal_secrets(argc, argv);
    wipe_secrets();
    if (argc > 0 && is_stub(argv[0]))
        start_watchdog(expected_parent());
    char own[24];
    snprintf(own, sizeof own, "%ld", (long)getpid());
    if (setenv(PARENT_VAR, own, 1) != 0)
        fail("out of memory");
}
