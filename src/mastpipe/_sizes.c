/* mastpipe._sizes: whether a million files still have their recorded sizes, one fstatat each,
 * on every core, without the interpreter.
 *
 * `status` and `plan` stat every file recorded as done (a file cut short in place changes no
 * directory, so nothing cheaper tells). In Python each stat builds an os.stat_result under the
 * GIL, ~1.1 us a file on top of the kernel's ~2 us; here threads share the work with the GIL
 * released and build nothing. mastpipe.stages.retrieve.stamps.sizes_hold calls this where it
 * was built and does the same in Python where it was not (the module is optional: a machine
 * without a C compiler installs mastpipe all the same).
 *
 * Plain C and POSIX threads, no numpy headers: the arrays arrive through the buffer protocol.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_THREADS 16
/* how many files a thread stats between looks at whether another has found a difference */
#define CHECK_EVERY 256

typedef struct {
    const int32_t *fds;    /* each file's directory, opened */
    const char *names;     /* fixed-width names, NUL-padded (numpy 'S' items) */
    Py_ssize_t width;
    const int64_t *sizes;  /* each file's recorded size */
    Py_ssize_t start, end; /* this thread's files */
    atomic_int *differs;   /* set by the first thread to find a file not as recorded */
} Share;

static void *
check(void *arg)
{
    Share *share = (Share *)arg;
    char name[4096 + 1];
    struct stat st;
    if (share->width > 4096) {
        atomic_store_explicit(share->differs, 1, memory_order_relaxed); /* no name that long is a file */
        return NULL;
    }
    for (Py_ssize_t i = share->start; i < share->end; i++) {
        if ((i - share->start) % CHECK_EVERY == 0 && atomic_load_explicit(share->differs, memory_order_relaxed))
            return NULL;
        memcpy(name, share->names + i * share->width, (size_t)share->width);
        name[share->width] = '\0';
        /* as os.stat(name, dir_fd=fd): a link is followed */
        if (fstatat(share->fds[i], name, &st, 0) != 0 || (int64_t)st.st_size != share->sizes[i]) {
            atomic_store_explicit(share->differs, 1, memory_order_relaxed);
            return NULL;
        }
    }
    return NULL;
}

PyDoc_STRVAR(sizes_hold_doc,
"sizes_hold(fds, names, width, sizes, threads) -> bool\n\n"
"Whether file i (name names[i*width:(i+1)*width], NUL-padded, in the directory open as fds[i],\n"
"int32) has size sizes[i] (int64), one fstatat each, split between `threads` threads with the\n"
"GIL released. False as soon as one thread finds a file missing or of another size.");

static PyObject *
sizes_hold(PyObject *module, PyObject *args)
{
    (void)module;
    Py_buffer fds, names, sizes;
    Py_ssize_t width;
    int threads;
    if (!PyArg_ParseTuple(args, "y*y*ny*i", &fds, &names, &width, &sizes, &threads))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t count = sizes.len / (Py_ssize_t)sizeof(int64_t);
    if (width < 1 || fds.len != count * (Py_ssize_t)sizeof(int32_t) || names.len != count * width) {
        PyErr_SetString(PyExc_ValueError, "sizes_hold: fds, names and sizes describe different numbers of files");
        goto done;
    }
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if (count < threads)
        threads = count ? (int)count : 1;

    atomic_int differs = 0;
    Share shares[MAX_THREADS];
    pthread_t ids[MAX_THREADS];
    int started = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        shares[t] = (Share){.fds = fds.buf, .names = names.buf, .width = width, .sizes = sizes.buf,
                            .start = count * t / threads, .end = count * (t + 1) / threads, .differs = &differs};
    }
    /* the calling thread takes the first share; a thread that cannot be started leaves its share
       to be done here */
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&ids[t], NULL, check, &shares[t]) == 0)
            started |= 1 << t;
    }
    check(&shares[0]);
    for (int t = 1; t < threads; t++) {
        if (started & (1 << t))
            pthread_join(ids[t], NULL);
        else
            check(&shares[t]);
    }
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(!atomic_load(&differs));
done:
    PyBuffer_Release(&fds);
    PyBuffer_Release(&names);
    PyBuffer_Release(&sizes);
    return result;
}

static PyMethodDef methods[] = {
    {"sizes_hold", sizes_hold, METH_VARARGS, sizes_hold_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "mastpipe._sizes",
    .m_doc = "Whether files still have their recorded sizes, stat-ed on every core (see sizes_hold).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__sizes(void)
{
    PyObject *created = PyModule_Create(&module);
    if (created == NULL)
        return NULL;
    PyObject *names = Py_BuildValue("[s]", "sizes_hold");
    if (names == NULL || PyModule_AddObject(created, "__all__", names) < 0) {
        Py_XDECREF(names);
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
