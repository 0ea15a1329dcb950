/* cl.c — the CL device: OpenCL through libOpenCL.so.1, loaded with dlopen at first use (kiln
 * builds and runs without it). Kernels are written in the OpenCL C dialect, built by the
 * driver, and their binaries kept in the disk cache; launches are queued in order and run
 * asynchronously until a host read or synchronize waits for them. */
#include "internal.h"
#include <dlfcn.h>

/* the few OpenCL types and constants used (the ABI of the OpenCL 1.2 headers) */
typedef int32_t cl_int;
typedef uint32_t cl_uint;
typedef uint64_t cl_ulong;
typedef void *cl_obj; /* platform, device, context, queue, mem, program, kernel */
enum {
  CL_DEVICE_TYPE_ALL = -1,
  CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS = 0x1003,
  CL_DEVICE_MAX_WORK_GROUP_SIZE = 0x1004,
  CL_DEVICE_LOCAL_MEM_SIZE = 0x1023,
  CL_DEVICE_NAME = 0x102B,
  CL_DEVICE_VERSION = 0x102F,
  CL_DRIVER_VERSION = 0x102D,
  CL_MEM_READ_WRITE = 1,
  CL_BUFFER_CREATE_TYPE_REGION = 0x1220,
  CL_PROGRAM_BUILD_LOG = 0x1183,
  CL_PROGRAM_BINARY_SIZES = 0x1165,
  CL_PROGRAM_BINARIES = 0x1166,
};

static struct {
  cl_int (*GetPlatformIDs)(cl_uint, cl_obj *, cl_uint *);
  cl_int (*GetDeviceIDs)(cl_obj, cl_ulong, cl_uint, cl_obj *, cl_uint *);
  cl_int (*GetDeviceInfo)(cl_obj, cl_uint, size_t, void *, size_t *);
  cl_obj (*CreateContext)(const intptr_t *, cl_uint, const cl_obj *, void *, void *, cl_int *);
  cl_obj (*CreateCommandQueue)(cl_obj, cl_obj, cl_ulong, cl_int *);
  cl_obj (*CreateBuffer)(cl_obj, cl_ulong, size_t, void *, cl_int *);
  cl_obj (*CreateSubBuffer)(cl_obj, cl_ulong, cl_uint, const void *, cl_int *);
  cl_int (*ReleaseMemObject)(cl_obj);
  cl_int (*EnqueueWriteBuffer)(cl_obj, cl_obj, cl_uint, size_t, size_t, const void *, cl_uint,
                               const void *, void *);
  cl_int (*EnqueueReadBuffer)(cl_obj, cl_obj, cl_uint, size_t, size_t, void *, cl_uint,
                              const void *, void *);
  cl_int (*EnqueueCopyBuffer)(cl_obj, cl_obj, cl_obj, size_t, size_t, size_t, cl_uint, const void *,
                              void *);
  cl_int (*EnqueueFillBuffer)(cl_obj, cl_obj, const void *, size_t, size_t, size_t, cl_uint,
                              const void *, void *);
  cl_obj (*CreateProgramWithSource)(cl_obj, cl_uint, const char **, const size_t *, cl_int *);
  cl_obj (*CreateProgramWithBinary)(cl_obj, cl_uint, const cl_obj *, const size_t *,
                                    const unsigned char **, cl_int *, cl_int *);
  cl_int (*BuildProgram)(cl_obj, cl_uint, const cl_obj *, const char *, void *, void *);
  cl_int (*GetProgramBuildInfo)(cl_obj, cl_obj, cl_uint, size_t, void *, size_t *);
  cl_int (*GetProgramInfo)(cl_obj, cl_uint, size_t, void *, size_t *);
  cl_obj (*CreateKernel)(cl_obj, const char *, cl_int *);
  cl_int (*SetKernelArg)(cl_obj, cl_uint, size_t, const void *);
  cl_int (*EnqueueNDRangeKernel)(cl_obj, cl_obj, cl_uint, const size_t *, const size_t *,
                                 const size_t *, cl_uint, const void *, void *);
  cl_int (*Finish)(cl_obj);
  cl_int (*ReleaseKernel)(cl_obj);
  cl_int (*ReleaseProgram)(cl_obj);
  cl_obj device, context, queue;
  char ident[512]; /* device, its version and the driver's: part of the binary cache key */
} cl;

static const struct {
  const char *name;
  void **fn;
} cl_fns[] = {
    {"clGetPlatformIDs", (void **)&cl.GetPlatformIDs},
    {"clGetDeviceIDs", (void **)&cl.GetDeviceIDs},
    {"clGetDeviceInfo", (void **)&cl.GetDeviceInfo},
    {"clCreateContext", (void **)&cl.CreateContext},
    {"clCreateCommandQueue", (void **)&cl.CreateCommandQueue},
    {"clCreateBuffer", (void **)&cl.CreateBuffer},
    {"clCreateSubBuffer", (void **)&cl.CreateSubBuffer},
    {"clReleaseMemObject", (void **)&cl.ReleaseMemObject},
    {"clEnqueueWriteBuffer", (void **)&cl.EnqueueWriteBuffer},
    {"clEnqueueReadBuffer", (void **)&cl.EnqueueReadBuffer},
    {"clEnqueueCopyBuffer", (void **)&cl.EnqueueCopyBuffer},
    {"clEnqueueFillBuffer", (void **)&cl.EnqueueFillBuffer},
    {"clCreateProgramWithSource", (void **)&cl.CreateProgramWithSource},
    {"clCreateProgramWithBinary", (void **)&cl.CreateProgramWithBinary},
    {"clBuildProgram", (void **)&cl.BuildProgram},
    {"clGetProgramBuildInfo", (void **)&cl.GetProgramBuildInfo},
    {"clGetProgramInfo", (void **)&cl.GetProgramInfo},
    {"clCreateKernel", (void **)&cl.CreateKernel},
    {"clSetKernelArg", (void **)&cl.SetKernelArg},
    {"clEnqueueNDRangeKernel", (void **)&cl.EnqueueNDRangeKernel},
    {"clFinish", (void **)&cl.Finish},
    {"clReleaseKernel", (void **)&cl.ReleaseKernel},
    {"clReleaseProgram", (void **)&cl.ReleaseProgram},
};

/* A failed call is a driver or device fault (kiln checks what it asks for): say which. */
static bool ok(cl_int rc, const char *what) {
  if (rc == 0) return true;
  kn_err("CL: %s failed (OpenCL error %d)", what, (int)rc);
  return false;
}
#define CHECK_CL(call) KN_ASSERT((call) == 0, "CL: %s failed", #call)

static const char *cl_probe(kn_device *d) {
  static char why[200];
  void *lib = dlopen("libOpenCL.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) lib = dlopen("libOpenCL.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    return "libOpenCL.so.1 not found (apt-get install ocl-icd-libopencl1 and a driver, e.g. "
           "pocl-opencl-icd)";
  for (size_t i = 0; i < sizeof cl_fns / sizeof *cl_fns; i++)
    if (!(*cl_fns[i].fn = dlsym(lib, cl_fns[i].name))) {
      snprintf(why, sizeof why, "libOpenCL.so.1 has no %s (OpenCL 1.2 is needed)", cl_fns[i].name);
      return why;
    }
  cl_obj plat[16], dev = NULL;
  cl_uint np = 0, nd = 0;
  if (cl.GetPlatformIDs(16, plat, &np) != 0 || np == 0)
    return "no OpenCL platform (install a driver, e.g. pocl-opencl-icd)";
  for (cl_uint i = 0; i < np && !dev; i++)
    if (cl.GetDeviceIDs(plat[i], (cl_ulong)CL_DEVICE_TYPE_ALL, 1, &dev, &nd) != 0) dev = NULL;
  if (!dev) return "no OpenCL device";
  cl_int rc;
  cl.device = dev;
  cl.context = cl.CreateContext(NULL, 1, &dev, NULL, NULL, &rc);
  if (rc != 0) return "clCreateContext failed";
  cl.queue = cl.CreateCommandQueue(cl.context, dev, 0, &rc);
  if (rc != 0) return "clCreateCommandQueue failed";
  cl_uint dims = 0;
  size_t group = 1;
  char name[200] = "", ver[100] = "", drv[100] = "";
  cl.GetDeviceInfo(dev, CL_DEVICE_MAX_WORK_ITEM_DIMENSIONS, sizeof dims, &dims, NULL);
  cl.GetDeviceInfo(dev, CL_DEVICE_MAX_WORK_GROUP_SIZE, sizeof group, &group, NULL);
  cl_ulong lmem = 0;
  cl.GetDeviceInfo(dev, CL_DEVICE_LOCAL_MEM_SIZE, sizeof lmem, &lmem, NULL);
  cl.GetDeviceInfo(dev, CL_DEVICE_NAME, sizeof name - 1, name, NULL);
  cl.GetDeviceInfo(dev, CL_DEVICE_VERSION, sizeof ver - 1, ver, NULL);
  cl.GetDeviceInfo(dev, CL_DRIVER_VERSION, sizeof drv - 1, drv, NULL);
  snprintf(cl.ident, sizeof cl.ident, "%s|%s|%s", name, ver, drv);
  d->caps = (kn_devcaps){.max_dims = dims < 3 ? (int)dims : 3,
                         .max_local = (int64_t)group,
                         .local_mem = (int64_t)lmem,
                         .opts = KN_OPT_ALL,
                         .vec_width = 8, /* every OpenCL C has 8-lane vectors */
                         .index32 = true};
  if (d->caps.max_dims < 1) return "the OpenCL device reports no launch dims";
  return NULL;
}

/* ---- memory: handles are cl_mem (a buffer of at least one byte) ---- */
static void *cl_alloc(kn_device *d, size_t n, bool zeroed) {
  (void)d;
  cl_int rc;
  cl_obj m = cl.CreateBuffer(cl.context, CL_MEM_READ_WRITE, n ? n : 1, NULL, &rc);
  if (rc != 0) {
    kn_err("CL: cannot allocate %zu bytes (OpenCL error %d)\nHINT: the device is out of memory", n,
           (int)rc);
    return NULL;
  }
  if (zeroed && n) {
    uint8_t zero = 0;
    CHECK_CL(cl.EnqueueFillBuffer(cl.queue, m, &zero, 1, 0, n, 0, NULL, NULL));
  }
  return m;
}
static void cl_free(kn_device *d, void *h) {
  (void)d;
  cl.ReleaseMemObject(h);
}
static void *cl_view(kn_device *d, void *h, size_t off, size_t n) {
  (void)d;
  size_t region[2] = {off, n ? n : 1};
  cl_int rc;
  cl_obj v = cl.CreateSubBuffer(h, CL_MEM_READ_WRITE, CL_BUFFER_CREATE_TYPE_REGION, region, &rc);
  ok(rc, "a view at this offset (offsets must be multiples of the device's base alignment)");
  return rc == 0 ? v : NULL;
}
static void cl_copyin(kn_device *d, void *dst, size_t off, const void *src, size_t n) {
  (void)d;
  CHECK_CL(cl.EnqueueWriteBuffer(cl.queue, dst, 1, off, n, src, 0, NULL, NULL));
}
static void cl_copyout(kn_device *d, void *dst, const void *src, size_t off, size_t n) {
  (void)d;
  CHECK_CL(cl.EnqueueReadBuffer(cl.queue, (void *)src, 1, off, n, dst, 0, NULL, NULL));
}
static void cl_copy(kn_device *d, void *dst, size_t doff, void *src, size_t soff, size_t n) {
  (void)d;
  CHECK_CL(cl.EnqueueCopyBuffer(cl.queue, src, dst, soff, doff, n, 0, NULL, NULL));
}
static void cl_fill(kn_device *d, void *dst, size_t off, size_t n) {
  (void)d;
  uint8_t zero = 0;
  CHECK_CL(cl.EnqueueFillBuffer(cl.queue, dst, &zero, 1, off, n, 0, NULL, NULL));
}
static void cl_sync(kn_device *d) {
  (void)d;
  cl.Finish(cl.queue);
}

/* ---- programs: built from source, or from the binary the driver gave for it last time ---- */
typedef struct {
  cl_obj program, kernel;
} clprog;
/* division and square root correctly rounded, as in C and the interpreter */
static const char cl_options[] = "-cl-fp32-correctly-rounded-divide-sqrt";

static cl_obj build(const char *src, const char *name, const char *bin_path) {
  cl_int rc;
  size_t nbin = 0;
  unsigned char *bin = kn_cache_load(bin_path, &nbin);
  cl_obj p = NULL;
  if (bin) { /* a binary the driver refuses (another driver version) is only rebuilt */
    const unsigned char *bins[1] = {bin};
    cl_int st;
    p = cl.CreateProgramWithBinary(cl.context, 1, &cl.device, &nbin, bins, &st, &rc);
    if (rc != 0 || st != 0 || cl.BuildProgram(p, 1, &cl.device, cl_options, NULL, NULL) != 0) {
      if (rc == 0) cl.ReleaseProgram(p);
      p = NULL;
    }
    free(bin);
  }
  if (p) return p;
  p = cl.CreateProgramWithSource(cl.context, 1, &src, NULL, &rc);
  if (!ok(rc, "clCreateProgramWithSource")) return NULL;
  kn_stats.kernels_compiled++;
  if (cl.BuildProgram(p, 1, &cl.device, cl_options, NULL, NULL) != 0) {
    char log[2048] = "";
    cl.GetProgramBuildInfo(p, cl.device, CL_PROGRAM_BUILD_LOG, sizeof log - 1, log, NULL);
    kn_err("CL: building kernel %s failed: %.1500s", name, log);
    cl.ReleaseProgram(p);
    return NULL;
  }
  if (cl.GetProgramInfo(p, CL_PROGRAM_BINARY_SIZES, sizeof nbin, &nbin, NULL) == 0 && nbin > 0) {
    bin = kn_xmalloc(nbin);
    unsigned char *bins[1] = {bin};
    if (cl.GetProgramInfo(p, CL_PROGRAM_BINARIES, sizeof bins, bins, NULL) == 0 &&
        kn_cache_mkdir("cl") == 0)
      kn_cache_store(bin_path, bin, nbin);
    free(bin);
  }
  return p;
}
static void *cl_compile(kn_device *d, const kn_kernel *k, const char *src) {
  (void)d;
  uint64_t key = kn_hash_bytes(0, src, strlen(src));
  key = kn_hash_bytes(key, cl.ident, strlen(cl.ident));
  key = kn_hash_bytes(key, cl_options, sizeof cl_options);
  char path[1200];
  kn_cache_path(path, sizeof path, "cl", key, ".bin");
  cl_obj p = build(src, k->name, path);
  if (!p) return NULL;
  cl_int rc;
  cl_obj kern = cl.CreateKernel(p, k->name, &rc);
  if (!ok(rc, "clCreateKernel")) {
    cl.ReleaseProgram(p);
    return NULL;
  }
  clprog *pg = kn_xmalloc(sizeof *pg);
  *pg = (clprog){p, kern};
  return pg;
}
static int cl_launch(kn_device *d, void *prog, const kn_kernel *k, void *const *bufs) {
  (void)d;
  clprog *pg = prog;
  for (int i = 0; i < k->nbufs; i++)
    if (!ok(cl.SetKernelArg(pg->kernel, (cl_uint)i, sizeof(cl_obj), &bufs[i]), "clSetKernelArg"))
      return -1;
  size_t global[3] = {1, 1, 1}, local[3] = {1, 1, 1};
  bool groups = false;
  for (int i = 0; i < k->nglobal; i++)
    global[i] = (size_t)k->global[i], local[i] = (size_t)k->local[i], groups |= local[i] > 1;
  return ok(cl.EnqueueNDRangeKernel(cl.queue, pg->kernel, k->nglobal ? (cl_uint)k->nglobal : 1,
                                    NULL, global, groups ? local : NULL, 0, NULL, NULL),
            "clEnqueueNDRangeKernel")
             ? 0
             : -1;
}
static void cl_free_program(kn_device *d, void *prog) {
  (void)d;
  clprog *pg = prog;
  cl.ReleaseKernel(pg->kernel);
  cl.ReleaseProgram(pg->program);
  free(pg);
}

kn_device kn_dev_cl = {.name = "CL",
                       .dialect = &kn_dialect_cl,
                       .probe = cl_probe,
                       .alloc = cl_alloc,
                       .free = cl_free,
                       .view = cl_view,
                       .free_view = cl_free,
                       .copyin = cl_copyin,
                       .copyout = cl_copyout,
                       .copy = cl_copy,
                       .fill = cl_fill,
                       .compile = cl_compile,
                       .launch = cl_launch,
                       .free_program = cl_free_program,
                       .synchronize = cl_sync};
