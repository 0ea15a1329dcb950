/* cpu.c — the CPU and INTERP devices (host memory). CPU compiles kernels written in the C
 * dialect with the system compiler into shared objects in the disk cache, loads them with
 * dlopen, and runs global[0] on a thread pool (the other launch dims are loops in a kernel). */
#include "internal.h"
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef void (*kfn)(void *const *bufs, long start, long end);
/* A compiled kernel: its function and the shared object it lives in. */
typedef struct {
  kfn fn;
  void *handle;
} cprog;

/* Zeroed memory. Large blocks are mapped straight from the kernel: untouched zero pages cost
 * no resident memory until written (a KV cache for a long context), and unmapping returns them
 * at once (the heap would keep the pages of freed activations). A 64-byte header before each
 * block records how it was made. */
#define HOST_MMAP_MIN (256 << 10)
static void *host_alloc_zeroed(size_t n) {
  size_t total = n + 64 + 64; /* header, and slack past the end */
  char *base;
  if (total >= HOST_MMAP_MIN) {
    base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) base = NULL;
  } else
    base = calloc(1, total);
  if (!base) kn_xmalloc((size_t)-1 / 2); /* reports out-of-memory */
  ((size_t *)base)[0] = total;
  return base + 64;
}
/* Freed mapped blocks are kept (up to SCRATCH_MAX bytes) for kernel outputs of the same size,
 * which overwrite them completely: a training step allocates the same activations every step,
 * and fresh pages would be faulted in and zeroed each time. A block no kernel took during the
 * last SCRATCH_AGE realizations is unmapped: the sizes of a pass that comes back rarely (an
 * evaluation each epoch) would otherwise stay resident beside the step's. */
#define SCRATCH_MAX ((size_t)1 << 30)
#define SCRATCH_AGE 16
static struct {
  char *base[256];
  size_t total[256], bytes;
  int64_t when[256]; /* kn_stats.schedules when kept */
  int n;
} scratch;
static void scratch_take(int i) {
  scratch.bytes -= scratch.total[i];
  scratch.n--;
  scratch.base[i] = scratch.base[scratch.n], scratch.total[i] = scratch.total[scratch.n];
  scratch.when[i] = scratch.when[scratch.n];
}
static void scratch_trim(void) {
  for (int i = scratch.n - 1; i >= 0; i--)
    if (kn_stats.schedules - scratch.when[i] > SCRATCH_AGE) {
      munmap(scratch.base[i], scratch.total[i]);
      scratch_take(i);
    }
}
static void host_free(kn_device *d, void *p) {
  (void)d;
  if (!p) return;
  char *base = (char *)p - 64;
  size_t total = ((size_t *)base)[0];
  if (total < HOST_MMAP_MIN) return free(base);
  scratch_trim();
  if (scratch.n < 256 && scratch.bytes + total <= SCRATCH_MAX) {
    scratch.base[scratch.n] = base, scratch.total[scratch.n] = total;
    scratch.when[scratch.n++] = kn_stats.schedules;
    scratch.bytes += total;
  } else
    munmap(base, total);
}
/* Memory whose contents do not matter (a kernel output) is a kept block of its size if any. */
static void *host_alloc(kn_device *d, size_t n, bool zeroed) {
  (void)d;
  size_t total = n + 64 + 64;
  scratch_trim();
  for (int i = scratch.n - 1; i >= 0 && total >= HOST_MMAP_MIN && !zeroed; i--)
    if (scratch.total[i] == total) {
      char *base = scratch.base[i];
      scratch_take(i);
      return base + 64;
    }
  return host_alloc_zeroed(n);
}
static void host_release(kn_device *d) {
  (void)d;
  while (scratch.n) {
    munmap(scratch.base[scratch.n - 1], scratch.total[scratch.n - 1]);
    scratch_take(scratch.n - 1);
  }
}
static void *host_view(kn_device *d, void *h, size_t off, size_t n) {
  (void)d, (void)n;
  return (char *)h + off;
}
static void host_free_view(kn_device *d, void *v) { (void)d, (void)v; }
static void host_copyin(kn_device *d, void *dst, size_t off, const void *src, size_t n) {
  (void)d;
  memcpy((char *)dst + off, src, n);
}
static void host_copyout(kn_device *d, void *dst, const void *src, size_t off, size_t n) {
  (void)d;
  memcpy(dst, (const char *)src + off, n);
}
static void host_copy(kn_device *d, void *dst, size_t doff, void *src, size_t soff, size_t n) {
  (void)d;
  memmove((char *)dst + doff, (char *)src + soff, n);
}
static void host_fill(kn_device *d, void *dst, size_t off, size_t n) {
  (void)d;
  memset((char *)dst + off, 0, n);
}
static void nop_sync(kn_device *d) { (void)d; }

static bool on_path(const char *prog) {
  const char *path = getenv("PATH");
  if (!path) return false;
  char full[4200];
  for (const char *p = path; *p;) {
    size_t n = strcspn(p, ":");
    if (n > 0 && n < 4096) {
      snprintf(full, sizeof full, "%.*s/%s", (int)n, p, prog);
      if (access(full, X_OK) == 0) return true;
    }
    p += n + (p[n] == ':');
  }
  return false;
}
/* KILN_CC, else clang where it is installed (its code for the vector lane loops is much faster:
 * the Q4_1 matrix-vector kernels of `kiln generate` run 1.6x faster than with gcc 12), else cc. */
static const char *compiler(void) {
  static const char *cc;
  if (!cc) {
    const char *e = getenv("KILN_CC");
    cc = e && *e ? e : on_path("clang") ? "clang" : "cc";
  }
  return cc;
}
/* The second compiler big kernels are also built with: cc beside a default clang; none when
 * KILN_CC names one. */
static const char *alt_compiler(void) {
  static int have = -1;
  if (have < 0) {
    const char *e = getenv("KILN_CC");
    have = !(e && *e) && !strcmp(compiler(), "clang") && on_path("cc");
  }
  return have ? "cc" : NULL;
}
/* one list: it builds the command line and is part of the cache key */
static const char *const cflags[] = {"-O2",     "-march=native",   "-fPIC", "-shared",
                                     "-fwrapv", "-fno-math-errno", "-w"};
#define NCFLAGS ((int)(sizeof cflags / sizeof cflags[0]))
/* Multiply-adds fused across statements (-ffp-contract=fast) with gcc, which decides it per
 * product, the same in every unrolled copy of a kernel's body. clang's choice across
 * statements depends on how its code generator orders the copies, so the rows of one batched
 * decode step rounded differently (with 8-bit activations a sequence's tokens then depended on
 * its row): clang fuses within a statement only, where the renderer writes an accumulator's
 * `acc += a * b` as one (render.c, folded_mul). */
static const char *contract_flag(const char *cc) {
  return strstr(cc, "clang") ? "-ffp-contract=on" : "-ffp-contract=fast";
}

/* Starts cc on src_path; the child's pid, or -1. */
static pid_t spawn_compiler(const char *cc, const char *src_path, const char *so_path) {
  pid_t pid = fork();
  if (pid < 0) kn_err("CPU: cannot start the compiler (fork: %s)", strerror(errno));
  if (pid == 0) {
    /* argv from the fixed flags; paths are ours (hex names in the cache dir) */
    const char *argv[NCFLAGS + 7];
    int n = 0;
    argv[n++] = cc;
    for (int i = 0; i < NCFLAGS; i++)
      argv[n++] = cflags[i];
    argv[n++] = contract_flag(cc);
    argv[n++] = "-o", argv[n++] = so_path, argv[n++] = src_path, argv[n++] = "-lm", argv[n] = NULL;
    execvp(cc, (char *const *)argv);
    _exit(127);
  }
  return pid;
}
static int wait_compiler(pid_t pid) {
  int st;
  if (pid < 0) return -1;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool cc_missing;
static cprog *load(const char *so, const char *name) {
  void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
  if (!h) return NULL;
  kfn fn = (kfn)dlsym(h, name);
  if (!fn) {
    dlclose(h);
    return NULL;
  }
  cprog *p = kn_xcalloc(1, sizeof *p);
  p->fn = fn, p->handle = h;
  return p;
}

/* Work of one launch, in operations: what decides threading and the compiler race. */
static double kernel_work(const kn_kernel *k) {
  double work = 1;
  for (int i = 0; i < k->nglobal; i++)
    work *= (double)k->global[i];
  return work * (k->nops + k->flops / (work > 0 ? work : 1));
}

/* Where the build of src by cc is cached, and its temporary files while it is built. */
static uint64_t build_paths(const char *src, const char *cc, char *so, char *tmpc, char *tmpso) {
  uint64_t key = kn_hash_bytes(0, src, strlen(src));
  key = kn_hash_bytes(key, cc, strlen(cc));
  for (int i = 0; i < NCFLAGS; i++)
    key = kn_hash_bytes(key, cflags[i], strlen(cflags[i]) + 1);
  key = kn_hash_bytes(key, contract_flag(cc), strlen(contract_flag(cc)) + 1);
  kn_cache_path(so, 1200, "cpu", key, ".so");
  snprintf(tmpc, 1300, "%s.tmp-%d.c", so, (int)getpid());
  snprintf(tmpso, 1300, "%s.tmp-%d", so, (int)getpid());
  return key;
}
/* Writes src to tmpc and starts cc on it: the compiler's pid, or -1 with an error. */
static pid_t start_build(const char *src, const char *cc, const char *tmpc, const char *tmpso) {
  if (kn_cache_mkdir("cpu") < 0) {
    kn_err("CPU: cannot create the kernel cache in %s\nHINT: set KILN_CACHE to a writable folder",
           kn_cache_dir());
    return -1;
  }
  FILE *f = fopen(tmpc, "w");
  if (!f || fputs(src, f) < 0 || fclose(f) != 0) {
    if (f) fclose(f);
    kn_err("CPU: cannot write %s", tmpc);
    return -1;
  }
  kn_stats.kernels_compiled++;
  return spawn_compiler(cc, tmpc, tmpso);
}

/* ---- builds ahead: compiler processes running while the schedule is prepared ----
 * At most one per thread of the pool at a time. A finished build that succeeded goes into the
 * disk cache, where build() finds it; one that failed is dropped, and build() compiles again
 * (and reports the error). */
static int nthreads(void);
typedef struct {
  uint64_t key;
  pid_t pid;
  char so[1200], tmpc[1300], tmpso[1300];
} job;
static job *jobs;
static int njobs, capjobs;
static void finish_job(int i) {
  job *j = &jobs[i];
  int rc = wait_compiler(j->pid);
  unlink(j->tmpc);
  if (rc == 0)
    kn_cache_commit(j->tmpso, j->so);
  else
    unlink(j->tmpso);
  jobs[i] = jobs[--njobs];
}
static void finish_job_for(uint64_t key) {
  for (int i = 0; i < njobs; i++)
    if (jobs[i].key == key) finish_job(i);
}
static void cpu_prefetch(kn_device *d, const kn_kernel *k, const char *src) {
  (void)d, (void)k;
  if (cc_missing) return;
  job j;
  j.key = build_paths(src, compiler(), j.so, j.tmpc, j.tmpso);
  for (int i = 0; i < njobs; i++)
    if (jobs[i].key == j.key) return;
  if (kn_cache_valid(j.so)) return;
  while (njobs > 0 && njobs >= nthreads())
    finish_job(0);
  bool had_error = kiln_error()[0] != 0;
  j.pid = start_build(src, compiler(), j.tmpc, j.tmpso);
  if (j.pid < 0) {
    if (!had_error) kiln_clear_error(); /* build() meets the same error, and reports it */
    unlink(j.tmpc);
    return;
  }
  if (njobs == capjobs) {
    capjobs = capjobs ? 2 * capjobs : 16;
    jobs = kn_xrealloc(jobs, sizeof(job) * (size_t)capjobs);
  }
  jobs[njobs++] = j;
}

/* The kernel built by compiler cc from src: from the disk cache, or compiled into it. */
static cprog *build(const kn_kernel *k, const char *src, const char *cc) {
  char so[1200], tmpc[1300], tmpso[1300];
  finish_job_for(build_paths(src, cc, so, tmpc, tmpso));
  cprog *p = kn_cache_valid(so) ? load(so, k->name) : NULL;
  if (p) return p;
  pid_t pid = start_build(src, cc, tmpc, tmpso);
  if (pid < 0) return NULL;
  int rc = wait_compiler(pid);
  if (rc == 127) {
    unlink(tmpc);
    if (cc != compiler()) return NULL; /* the race's second compiler: not needed */
    fprintf(stderr,
            "kiln: no C compiler found ('%s'); CPU kernels run on the interpreter.\n"
            "HINT: install clang or gcc (apt-get install clang) or set KILN_CC\n",
            cc);
    cc_missing = true;
    return kn_xcalloc(1, sizeof(cprog));
  }
  if (rc != 0) {
    kn_err("CPU: compiling kernel %s failed (exit %d); source kept at %s", k->name, rc, tmpc);
    return NULL;
  }
  unlink(tmpc);
  kn_cache_commit(tmpso, so);
  p = load(so, k->name);
  if (!p) kn_err("CPU: cannot load compiled kernel %s: %s", so, dlerror());
  return p;
}

/* ---- the compiler race ----
 * A big kernel is built by two compilers when two are installed: their code for the same
 * kernel differs a lot (clang widens bytes to 32-bit lanes in one instruction where gcc 12 goes
 * through scalar code; gcc's register tiles of f32 matmuls run faster). Both builds are timed on
 * scratch buffers of the kernel's sizes (zeros: kernels address memory by loop indices only,
 * never by loaded values), the faster one is kept, and the choice is written beside the cache
 * entries, so later runs load the winner directly and a kernel always runs the same code. */
#define RACE_MIN_WORK 2e7          /* about a millisecond: smaller kernels keep the first build */
#define RACE_MAX_BYTES (256 << 20) /* scratch memory a race may take */
static void run_kernel(kfn fn, const kn_kernel *k, void *const *bufs);

bool kn_quick_compile;
static double scratch_bytes(const kn_kernel *k) {
  double bytes = 0;
  for (int i = 0; i < k->nbufs; i++)
    bytes += (double)k->buf_numel[i] * (double)kiln_dtype_size(k->buf_dtype[i]);
  return bytes;
}
static bool race_wanted(const kn_kernel *k) {
  if (kn_quick_compile || !alt_compiler() || kernel_work(k) < RACE_MIN_WORK) return false;
  if (!kn_search_budget_left()) return false; /* raced by a later run */
  return scratch_bytes(k) <= RACE_MAX_BYTES;
}
/* Fastest of `runs` launches of each of fns[0..n) (interleaved) on zeroed scratch buffers. */
static void time_on_scratch(const kn_kernel *k, int n, const kfn *fns, int runs, double *best) {
  void *bufs[64];
  for (int i = 0; i < k->nbufs; i++) { /* written, so each page is its own: untouched pages of a
                                          large calloc all map one zero page, always in cache */
    size_t nb = (size_t)k->buf_numel[i] * kiln_dtype_size(k->buf_dtype[i]) + 64;
    bufs[i] = memset(kn_xmalloc(nb), 0, nb);
  }
  for (int j = 0; j < n; j++)
    best[j] = 1e30;
  for (int r = 0; r < runs * n; r++) {
    double t0 = kn_now();
    run_kernel(fns[r % n], k, bufs);
    double t = kn_now() - t0;
    if (t < best[r % n]) best[r % n] = t;
  }
  for (int i = 0; i < k->nbufs; i++)
    free(bufs[i]);
}
/* the autotuner's clock (device.c): one launch after a warm-up one */
static double cpu_time_program(kn_device *d, void *pg, const kn_kernel *k) {
  (void)d;
  kfn fn = ((cprog *)pg)->fn;
  if (!fn || scratch_bytes(k) > RACE_MAX_BYTES) return -1;
  double t;
  time_on_scratch(k, 1, &fn, 2, &t);
  return t;
}
/* 1 if b is faster than a by more than a tenth (so noise does not flip a close call). */
static int race(const kn_kernel *k, kfn a, kfn b) {
  double best[2];
  time_on_scratch(k, 2, (kfn[]){a, b}, 2,
                  best); /* a b a b: the first launch of each warms the caches */
  if (kn_debug_level() >= 3)
    fprintf(stderr, "kiln: %s: %s %.3f ms, %s %.3f ms\n", k->name, compiler(), best[0] * 1e3,
            alt_compiler(), best[1] * 1e3);
  return best[1] < 0.9 * best[0];
}
/* The race's verdict file for this source: the winning compiler's name. */
static void pick_path(const char *src, char *out, size_t n) {
  uint64_t key = kn_hash_bytes(0, src, strlen(src));
  for (int i = 0; i < NCFLAGS; i++)
    key = kn_hash_bytes(key, cflags[i], strlen(cflags[i]) + 1);
  kn_cache_path(out, n, "cpu", key, ".pick");
}

static void free_prog(cprog *p) {
  if (p && p->handle) dlclose(p->handle);
  free(p);
}

static void *cpu_compile(kn_device *d, const kn_kernel *k, const char *src) {
  (void)d;
  if (cc_missing) return kn_xcalloc(1, sizeof(cprog)); /* fn NULL: interpreted */
  if (!race_wanted(k)) return build(k, src, compiler());
  char pick[1200], name[64] = "";
  pick_path(src, pick, sizeof pick);
  FILE *f = fopen(pick, "r");
  if (f) {
    if (!fgets(name, sizeof name, f)) name[0] = 0;
    name[strcspn(name, "\n")] = 0;
    fclose(f);
  }
  const char *cc = !strcmp(name, alt_compiler()) ? alt_compiler() : compiler();
  cprog *p = build(k, src, cc);
  if (p && p->fn && strcmp(name, compiler()) && strcmp(name, alt_compiler())) { /* no verdict yet */
    bool had_error = kiln_error()[0] != 0;
    double t0 = kn_now();
    cprog *q = build(k, src, alt_compiler());
    if (q && q->fn && race(k, p->fn, q->fn)) {
      free_prog(p);
      p = q, q = NULL, cc = alt_compiler();
    }
    free_prog(q);
    kn_search_charge(kn_now() - t0);
    if (!had_error)
      kiln_clear_error(); /* the second build is optional: its failure is not the caller's */
    f = fopen(pick, "w");
    if (f) {
      fprintf(f, "%s\n", cc);
      fclose(f);
    }
  }
  return p;
}

static void cpu_free_program(kn_device *d, void *pg) {
  (void)d;
  free_prog(pg);
}

/* ---- thread pool: workers run slices of global[0] ----
 * Launches come in quick succession (a decoded token is hundreds of small kernels), so both
 * sides spin briefly on the generation / pending counters before sleeping on the condition
 * variables: a wake-up through the scheduler costs more than many of these kernels. A launch
 * is cut into a few parts per thread, taken in turn from a counter, so a thread that starts
 * late (woken from sleep, or its core busy with other work) leaves its share to the others;
 * which thread runs a part never changes what it computes. */
#define PARTS_PER_THREAD 4
#define SPIN_ROUNDS 20000
static struct {
  pthread_t th[64];
  int n; /* workers besides the caller */
  pthread_mutex_t mu;
  pthread_cond_t go, done;
  _Atomic uint64_t gen;
  _Atomic int pending;
  kfn fn;
  const kn_kernel *k;
  void *const *bufs;
  long total;
  int parts;
  _Atomic int next; /* the next part to run */
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER,
          .go = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}
static void run_parts(void) {
  for (int part; (part = atomic_fetch_add(&pool.next, 1)) < pool.parts;) {
    long a = pool.total * part / pool.parts, b = pool.total * (part + 1) / pool.parts;
    if (a < b) {
      if (pool.fn)
        pool.fn(pool.bufs, a, b);
      else
        kn_interp_run(pool.k, pool.bufs, a, b);
    }
  }
}
static void *worker(void *arg) {
  (void)arg;
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = atomic_load(&pool.gen);
    for (int i = 0; g == seen && i < SPIN_ROUNDS; i++, g = atomic_load(&pool.gen))
      cpu_relax();
    if (g == seen) {
      pthread_mutex_lock(&pool.mu);
      while ((g = atomic_load(&pool.gen)) == seen)
        pthread_cond_wait(&pool.go, &pool.mu);
      pthread_mutex_unlock(&pool.mu);
    }
    seen = g;
    run_parts();
    if (atomic_fetch_sub(&pool.pending, 1) == 1) {
      pthread_mutex_lock(&pool.mu);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.mu);
    }
  }
  return NULL;
}
static int nthreads(void) {
  static int n = 0;
  if (!n) {
    const char *e = getenv("KILN_THREADS");
    n = e && atoi(e) > 0 ? atoi(e) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) n = 1;
    if (n > 64) n = 64;
  }
  return n;
}

static int cpu_launch(kn_device *d, void *pg, const kn_kernel *k, void *const *bufs) {
  (void)d;
  run_kernel(((cprog *)pg)->fn, k, bufs);
  return 0;
}
static void run_kernel(kfn fn, const kn_kernel *k, void *const *bufs) {
  long total = k->nglobal ? k->global[0] : 1;
  double work = kernel_work(k);
  int nt = nthreads();
  if (nt == 1 || total < 2 || work < 200000) {
    if (fn)
      fn(bufs, 0, total);
    else
      kn_interp_run(k, bufs, 0, total);
    return;
  }
  pthread_mutex_lock(&pool.mu);
  while (pool.n < nt - 1) {
    pthread_create(&pool.th[pool.n], NULL, worker, NULL);
    pthread_detach(pool.th[pool.n]);
    pool.n++;
  }
  pool.fn = fn, pool.k = k, pool.bufs = bufs, pool.total = total;
  pool.parts = (long)nt * PARTS_PER_THREAD < total ? nt * PARTS_PER_THREAD : (int)total;
  atomic_store(&pool.next, 0);
  atomic_store(&pool.pending, pool.n);
  atomic_fetch_add(&pool.gen, 1);
  pthread_cond_broadcast(&pool.go);
  pthread_mutex_unlock(&pool.mu);
  run_parts();
  for (int i = 0; atomic_load(&pool.pending) && i < SPIN_ROUNDS; i++)
    cpu_relax();
  if (atomic_load(&pool.pending)) {
    pthread_mutex_lock(&pool.mu);
    while (atomic_load(&pool.pending))
      pthread_cond_wait(&pool.done, &pool.mu);
    pthread_mutex_unlock(&pool.mu);
  }
}

#define HOST_MEMORY                                                                                \
  .alloc = host_alloc, .free = host_free, .view = host_view, .free_view = host_free_view,          \
  .copyin = host_copyin, .copyout = host_copyout, .copy = host_copy, .fill = host_fill,            \
  .synchronize = nop_sync, .release = host_release
/* A CPU launch may use as many dims as a kernel has (they are loops); launch dim 0 runs on
 * the thread pool; no work-groups. INTERP lowers as the CPU does (it is the CPU's bitwise
 * oracle); kernels lowered for other devices run on it too, work-groups and all. */
#define CPU_CAPS                                                                                   \
  {                                                                                                \
    .max_dims = 2 * KILN_MAX_DIMS, .max_local = 1,                                                 \
    .opts = KN_OPT_BIT(KN_OPT_UPCAST) | KN_OPT_BIT(KN_OPT_SPLIT) | KN_OPT_BIT(KN_OPT_BLOCK) |      \
            KN_OPT_BIT(KN_OPT_UNROLL) | KN_OPT_BIT(KN_OPT_PADTO) | KN_OPT_BIT(KN_OPT_LANES),       \
    .vec_width = 8, .host_memory = true, .pool = true                                              \
  }
kn_device kn_dev_cpu = {.name = "CPU",
                        .dialect = &kn_dialect_c,
                        .caps = CPU_CAPS,
                        HOST_MEMORY,
                        .compile = cpu_compile,
                        .prefetch = cpu_prefetch,
                        .launch = cpu_launch,
                        .free_program = cpu_free_program,
                        .time_program = cpu_time_program};

/* ---- INTERP: programs are the lowered kernels themselves ---- */
static void *interp_compile(kn_device *d, const kn_kernel *k, const char *src) {
  (void)d, (void)src;
  return (void *)k;
}
static int interp_launch(kn_device *d, void *pg, const kn_kernel *k, void *const *bufs) {
  (void)d, (void)pg;
  kn_interp_run(k, bufs, 0, k->nglobal ? k->global[0] : 1);
  return 0;
}
static void interp_free(kn_device *d, void *pg) { (void)d, (void)pg; }
kn_device kn_dev_interp = {.name = "INTERP",
                           .caps = CPU_CAPS,
                           HOST_MEMORY,
                           .compile = interp_compile,
                           .launch = interp_launch,
                           .free_program = interp_free};
