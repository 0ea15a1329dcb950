/* cuda.c — the CUDA device: NVIDIA GPUs through the driver API (libcuda.so.1) and NVRTC
 * (libnvrtc.so), both loaded with dlopen at first use, so kiln builds and runs without them.
 * Kernels are written in the CUDA C dialect, compiled by NVRTC to a CUBIN for the GPU's
 * compute capability (kept in the disk cache), and launched in blocks on the default stream;
 * a replayed capture is one CUDA graph.
 * kn_cuda_check compiles without a GPU: CI checks every kernel's CUDA C that way. */
#include "internal.h"
#include <dlfcn.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
typedef void *CUobj; /* context, module, function */
enum { CU_THREADS_PER_BLOCK = 1, CU_SHARED_PER_BLOCK = 8, CU_CC_MAJOR = 75, CU_CC_MINOR = 76 };
#define BLOCK 256 /* threads of a block along the one launch dim */

static struct {
  CUresult (*Init)(unsigned);
  CUresult (*DeviceGet)(int *, int);
  CUresult (*DeviceGetAttribute)(int *, int, int);
  CUresult (*DevicePrimaryCtxRetain)(CUobj *, int);
  CUresult (*CtxSetCurrent)(CUobj);
  CUresult (*MemAlloc)(CUdeviceptr *, size_t);
  CUresult (*MemFree)(CUdeviceptr);
  CUresult (*MemcpyHtoD)(CUdeviceptr, const void *, size_t);
  CUresult (*MemcpyDtoH)(void *, CUdeviceptr, size_t);
  CUresult (*MemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
  CUresult (*MemsetD8)(CUdeviceptr, unsigned char, size_t);
  CUresult (*ModuleLoadData)(CUobj *, const void *);
  CUresult (*ModuleGetFunction)(CUobj *, CUobj, const char *);
  CUresult (*ModuleUnload)(CUobj);
  CUresult (*LaunchKernel)(CUobj, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                           unsigned, void *, void **, void **);
  CUresult (*CtxSynchronize)(void);
  CUresult (*GetErrorString)(CUresult, const char **);
  /* graphs (optional: replays go launch by launch without them) */
  CUresult (*GraphCreate)(CUobj *, unsigned);
  CUresult (*GraphAddKernelNode)(CUobj *, CUobj, const CUobj *, size_t, const void *);
  CUresult (*GraphInstantiate)(CUobj *, CUobj, unsigned long long);
  CUresult (*GraphLaunch)(CUobj, CUobj);
  CUresult (*GraphExecDestroy)(CUobj);
  CUresult (*GraphDestroy)(CUobj);
  char arch[16]; /* sm_XY of the GPU */
  CUobj ctx;     /* the device's primary context */
} cu;
/* A context is current per thread: the thread that probed is not always the one that runs
 * (kiln serve's worker), so every entry point makes it current on its thread first. */
static _Thread_local bool cu_current;
static void current(void) {
  if (!cu_current) cu_current = cu.CtxSetCurrent(cu.ctx) == 0;
}
/* a kernel node's parameters (cuda.h's CUDA_KERNEL_NODE_PARAMS_v2) */
typedef struct {
  CUobj func;
  unsigned grid[3], block[3], shared;
  void **params, **extra;
  CUobj kern, ctx;
} cu_node_params;

static struct {
  int (*Create)(void **, const char *, const char *, int, const char *const *, const char *const *);
  int (*Compile)(void *, int, const char *const *);
  int (*GetLogSize)(void *, size_t *);
  int (*GetLog)(void *, char *);
  int (*GetCUBINSize)(void *, size_t *);
  int (*GetCUBIN)(void *, char *);
  int (*Destroy)(void **);
  bool loaded;
} rtc;

typedef struct {
  const char *name;
  void **fn;
} sym;
static bool bind(void *lib, const sym *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!(*s[i].fn = dlsym(lib, s[i].name))) return false;
  return true;
}

/* NVRTC alone (no GPU needed); NULL when loaded, else why not */
static const char *load_nvrtc(void) {
  if (rtc.loaded) return NULL;
  static const char *const names[] = {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12",
                                      "/usr/local/cuda/lib64/libnvrtc.so"};
  void *lib = NULL;
  for (size_t i = 0; i < sizeof names / sizeof *names && !lib; i++)
    lib = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "libnvrtc.so not found (install the CUDA toolkit's NVRTC)";
  const sym s[] = {{"nvrtcCreateProgram", (void **)&rtc.Create},
                   {"nvrtcCompileProgram", (void **)&rtc.Compile},
                   {"nvrtcGetProgramLogSize", (void **)&rtc.GetLogSize},
                   {"nvrtcGetProgramLog", (void **)&rtc.GetLog},
                   {"nvrtcGetCUBINSize", (void **)&rtc.GetCUBINSize},
                   {"nvrtcGetCUBIN", (void **)&rtc.GetCUBIN},
                   {"nvrtcDestroyProgram", (void **)&rtc.Destroy}};
  if (!bind(lib, s, sizeof s / sizeof *s))
    return "libnvrtc.so lacks nvrtcGetCUBIN (NVRTC 11.1 or newer is needed)";
  rtc.loaded = true;
  return NULL;
}

/* CUDA C source -> CUBIN for arch (malloc'ed); NULL with an error naming the kernel. */
static void *nvrtc_build(const char *src, const char *name, const char *arch, size_t *n) {
  const char *why = load_nvrtc();
  if (why) {
    kn_err("CUDA: %s", why);
    return NULL;
  }
  char archopt[40];
  snprintf(archopt, sizeof archopt, "--gpu-architecture=%s", arch);
  const char *opts[] = {archopt, "--device-as-default-execution-space", "-w"};
  void *p = NULL;
  if (rtc.Create(&p, src, name, 0, NULL, NULL) != 0) {
    kn_err("CUDA: nvrtcCreateProgram failed for kernel %s", name);
    return NULL;
  }
  kn_stats.kernels_compiled++;
  void *cubin = NULL;
  if (rtc.Compile(p, 3, opts) != 0) {
    size_t ln = 0;
    rtc.GetLogSize(p, &ln);
    char *log = kn_xcalloc(ln + 1, 1);
    rtc.GetLog(p, log);
    kn_err("CUDA: NVRTC could not compile kernel %s for %s: %.1500s", name, arch, log);
    free(log);
  } else if (rtc.GetCUBINSize(p, n) == 0 && *n > 0) {
    cubin = kn_xmalloc(*n);
    if (rtc.GetCUBIN(p, cubin) != 0)
      free(cubin), cubin = NULL, kn_err("CUDA: nvrtcGetCUBIN failed for %s", name);
  } else
    kn_err("CUDA: NVRTC gave no CUBIN for %s", name);
  rtc.Destroy(&p);
  return cubin;
}
int kn_cuda_check(const char *src, const char *name, const char *arch) {
  size_t n;
  void *c = nvrtc_build(src, name, arch, &n);
  free(c);
  return c ? 0 : -1;
}

static bool ok(CUresult rc, const char *what) {
  if (rc == 0) return true;
  const char *s = NULL;
  if (cu.GetErrorString) cu.GetErrorString(rc, &s);
  kn_err("CUDA: %s failed: %s (error %d)", what, s ? s : "unknown", rc);
  return false;
}
#define CHECK_CU(call) KN_ASSERT((call) == 0, "CUDA: %s failed", #call)

static const char *cuda_probe(kn_device *d) {
  static char why[200];
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "libcuda.so.1 not found (no NVIDIA driver here)";
  const sym s[] = {{"cuInit", (void **)&cu.Init},
                   {"cuDeviceGet", (void **)&cu.DeviceGet},
                   {"cuDeviceGetAttribute", (void **)&cu.DeviceGetAttribute},
                   {"cuDevicePrimaryCtxRetain", (void **)&cu.DevicePrimaryCtxRetain},
                   {"cuCtxSetCurrent", (void **)&cu.CtxSetCurrent},
                   {"cuMemAlloc_v2", (void **)&cu.MemAlloc},
                   {"cuMemFree_v2", (void **)&cu.MemFree},
                   {"cuMemcpyHtoD_v2", (void **)&cu.MemcpyHtoD},
                   {"cuMemcpyDtoH_v2", (void **)&cu.MemcpyDtoH},
                   {"cuMemcpyDtoD_v2", (void **)&cu.MemcpyDtoD},
                   {"cuMemsetD8_v2", (void **)&cu.MemsetD8},
                   {"cuModuleLoadData", (void **)&cu.ModuleLoadData},
                   {"cuModuleGetFunction", (void **)&cu.ModuleGetFunction},
                   {"cuModuleUnload", (void **)&cu.ModuleUnload},
                   {"cuLaunchKernel", (void **)&cu.LaunchKernel},
                   {"cuCtxSynchronize", (void **)&cu.CtxSynchronize},
                   {"cuGetErrorString", (void **)&cu.GetErrorString}};
  if (!bind(lib, s, sizeof s / sizeof *s))
    return "libcuda.so.1 is too old (CUDA 11 or newer is needed)";
  const sym g[] = {{"cuGraphCreate", (void **)&cu.GraphCreate},
                   {"cuGraphAddKernelNode_v2", (void **)&cu.GraphAddKernelNode},
                   {"cuGraphInstantiateWithFlags", (void **)&cu.GraphInstantiate},
                   {"cuGraphLaunch", (void **)&cu.GraphLaunch},
                   {"cuGraphExecDestroy", (void **)&cu.GraphExecDestroy},
                   {"cuGraphDestroy", (void **)&cu.GraphDestroy}};
  if (!bind(lib, g, sizeof g / sizeof *g)) cu.GraphCreate = NULL; /* a driver before CUDA 12 */
  int dev, major = 0, minor = 0, threads = 0, shared = 0, rc = cu.Init(0);
  if (rc != 0 || cu.DeviceGet(&dev, 0) != 0) {
    snprintf(why, sizeof why, "no CUDA GPU (cuInit: error %d)", rc);
    return why;
  }
  if (cu.DevicePrimaryCtxRetain(&cu.ctx, dev) != 0 || cu.CtxSetCurrent(cu.ctx) != 0)
    return "cannot create a CUDA context";
  cu_current = true;
  cu.DeviceGetAttribute(&major, CU_CC_MAJOR, dev);
  cu.DeviceGetAttribute(&minor, CU_CC_MINOR, dev);
  cu.DeviceGetAttribute(&threads, CU_THREADS_PER_BLOCK, dev);
  snprintf(cu.arch, sizeof cu.arch, "sm_%d%d", major, minor);
  const char *nv = load_nvrtc();
  if (nv) return nv;
  d->caps.max_local = threads;
  cu.DeviceGetAttribute(&shared, CU_SHARED_PER_BLOCK, dev);
  d->caps.local_mem = shared;
  return NULL;
}

/* ---- memory: handles are device addresses ---- */
#define DPTR(h) ((CUdeviceptr)(uintptr_t)(h))
static void *cuda_alloc(kn_device *d, size_t n, bool zeroed) {
  current();
  (void)d;
  CUdeviceptr p;
  CUresult rc = cu.MemAlloc(&p, n ? n : 1);
  if (rc != 0) {
    ok(rc, "cuMemAlloc");
    return NULL;
  }
  if (zeroed && n) CHECK_CU(cu.MemsetD8(p, 0, n));
  return (void *)(uintptr_t)p;
}
static void cuda_free(kn_device *d, void *h) {
  current();
  (void)d;
  cu.MemFree(DPTR(h));
}
static void *cuda_view(kn_device *d, void *h, size_t off, size_t n) {
  (void)d, (void)n;
  return (void *)(uintptr_t)(DPTR(h) + off);
}
static void cuda_free_view(kn_device *d, void *v) { (void)d, (void)v; }
static void cuda_copyin(kn_device *d, void *dst, size_t off, const void *src, size_t n) {
  current();
  (void)d;
  CHECK_CU(cu.MemcpyHtoD(DPTR(dst) + off, src, n));
}
static void cuda_copyout(kn_device *d, void *dst, const void *src, size_t off, size_t n) {
  current();
  (void)d;
  CHECK_CU(cu.MemcpyDtoH(dst, DPTR(src) + off, n));
}
static void cuda_copy(kn_device *d, void *dst, size_t doff, void *src, size_t soff, size_t n) {
  current();
  (void)d;
  CHECK_CU(cu.MemcpyDtoD(DPTR(dst) + doff, DPTR(src) + soff, n));
}
static void cuda_fill(kn_device *d, void *dst, size_t off, size_t n) {
  current();
  (void)d;
  CHECK_CU(cu.MemsetD8(DPTR(dst) + off, 0, n));
}
static void cuda_sync(kn_device *d) {
  current();
  (void)d;
  cu.CtxSynchronize();
}

/* ---- programs ---- */
typedef struct {
  CUobj module, fn;
} cuprog;
static void *cuda_compile(kn_device *d, const kn_kernel *k, const char *src) {
  current();
  (void)d;
  uint64_t key = kn_hash_bytes(0, src, strlen(src));
  key = kn_hash_bytes(key, cu.arch, strlen(cu.arch));
  char path[1200];
  kn_cache_path(path, sizeof path, "cuda", key, ".cubin");
  size_t n = 0;
  void *cubin = kn_cache_load(path, &n);
  if (!cubin) {
    if (!(cubin = nvrtc_build(src, k->name, cu.arch, &n))) return NULL;
    if (kn_cache_mkdir("cuda") == 0) kn_cache_store(path, cubin, n);
  }
  cuprog *p = kn_xcalloc(1, sizeof *p);
  bool good = ok(cu.ModuleLoadData(&p->module, cubin), "cuModuleLoadData") &&
              ok(cu.ModuleGetFunction(&p->fn, p->module, k->name), "cuModuleGetFunction");
  free(cubin);
  if (!good) {
    if (p->module) cu.ModuleUnload(p->module);
    free(p);
    return NULL;
  }
  return p;
}
/* blocks and threads per block of a launch of k; false with an error if it cannot be one */
static bool launch_dims(const kn_kernel *k, unsigned *blocks, unsigned *threads) {
  int64_t total = k->nglobal ? k->global[0] : 1;
  *threads = k->local[0] > 1 ? (unsigned)k->local[0] : total < BLOCK ? (unsigned)total : BLOCK;
  int64_t b = (total + *threads - 1) / *threads;
  if (b > 0x7fffffff) {
    kn_err("CUDA: kernel %s needs %lld blocks, more than a launch can have", k->name, (long long)b);
    return false;
  }
  *blocks = (unsigned)b;
  return true;
}
static int cuda_launch(kn_device *d, void *prog, const kn_kernel *k, void *const *bufs) {
  current();
  (void)d;
  cuprog *p = prog;
  CUdeviceptr ptrs[64];
  void *args[64];
  for (int i = 0; i < k->nbufs; i++)
    ptrs[i] = DPTR(bufs[i]), args[i] = &ptrs[i];
  unsigned blocks, threads;
  if (!launch_dims(k, &blocks, &threads)) return -1;
  return ok(cu.LaunchKernel(p->fn, blocks, 1, 1, threads, 1, 1, 0, NULL, args, NULL),
            "cuLaunchKernel")
             ? 0
             : -1;
}

/* A replay as a CUDA graph: one kernel node per launch, each after the one before (the
 * driver copies the arguments when a node is added). */
typedef struct {
  CUobj graph, exec;
} cugraph;
static void cuda_graph_free(kn_device *d, void *g) {
  current();
  (void)d;
  cugraph *c = g;
  if (c->exec) cu.GraphExecDestroy(c->exec);
  if (c->graph) cu.GraphDestroy(c->graph);
  free(c);
}
static void *cuda_graph(kn_device *d, int n, void *const *progs, const kn_kernel *const *ks,
                        void *const *const *bufs) {
  if (!cu.GraphCreate) return NULL;
  current();
  cugraph *c = kn_xcalloc(1, sizeof *c);
  bool good = ok(cu.GraphCreate(&c->graph, 0), "cuGraphCreate");
  CUobj prev = NULL;
  for (int i = 0; i < n && good; i++) {
    CUdeviceptr ptrs[64];
    void *args[64];
    for (int j = 0; j < ks[i]->nbufs; j++)
      ptrs[j] = DPTR(bufs[i][j]), args[j] = &ptrs[j];
    cu_node_params np = {.func = ((cuprog *)progs[i])->fn, .params = args};
    good = launch_dims(ks[i], &np.grid[0], &np.block[0]);
    np.grid[1] = np.grid[2] = np.block[1] = np.block[2] = 1;
    CUobj node = NULL;
    good =
        good && ok(cu.GraphAddKernelNode(&node, c->graph, prev ? &prev : NULL, prev ? 1 : 0, &np),
                   "cuGraphAddKernelNode");
    prev = node;
  }
  good = good && ok(cu.GraphInstantiate(&c->exec, c->graph, 0), "cuGraphInstantiate");
  if (!good) {
    cuda_graph_free(d, c);
    return NULL;
  }
  return c;
}
static int cuda_graph_launch(kn_device *d, void *g) {
  current();
  (void)d;
  return ok(cu.GraphLaunch(((cugraph *)g)->exec, NULL), "cuGraphLaunch") ? 0 : -1;
}
static void cuda_free_program(kn_device *d, void *prog) {
  current();
  (void)d;
  cuprog *p = prog;
  cu.ModuleUnload(p->module);
  free(p);
}

/* one launch dim (x), so no launch size meets the smaller limits of y and z */
kn_device kn_dev_cuda = {
    .name = "CUDA",
    .dialect = &kn_dialect_cuda,
    .caps = {.max_dims = 1,
             .max_local = 1024,
             .local_mem = 48 << 10,
             .opts = KN_OPT_ALL,
             .index32 = true},
    .probe = cuda_probe,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .view = cuda_view,
    .free_view = cuda_free_view,
    .copyin = cuda_copyin,
    .copyout = cuda_copyout,
    .copy = cuda_copy,
    .fill = cuda_fill,
    .compile = cuda_compile,
    .launch = cuda_launch,
    .free_program = cuda_free_program,
    .graph = cuda_graph,
    .graph_launch = cuda_graph_launch,
    .graph_free = cuda_graph_free,
    .synchronize = cuda_sync};
