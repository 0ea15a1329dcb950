/* internal.h — the contracts between kiln's stages: graph nodes (front end), kernels
 * (scheduler -> codegen), the linear low-level program (codegen -> renderers), and the
 * device interface (runtime). Cross-file internals use the kn_ prefix. */
#ifndef KN_INTERNAL_H
#define KN_INTERNAL_H

#include "kiln.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors and invariants ---------------------------------------------------------------- */
/* Records a user-facing error (the first one since kiln_clear_error wins). */
void kn_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* While a composite op runs, errors from the ops it calls are reported under its name. */
void kn_err_push(const char *name);
void kn_err_pop(void);
/* Broken internal invariant: print file:line and what was expected, then abort. */
#define KN_ASSERT(cond, ...)                                                                       \
  do {                                                                                             \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "kiln: internal error at %s:%d: ", __FILE__, __LINE__);                      \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fprintf(stderr, "\n");                                                                       \
      abort();                                                                                     \
    }                                                                                              \
  } while (0)
void *kn_xmalloc(size_t n); /* aborts on out-of-memory with a hint */
void *kn_xcalloc(size_t n, size_t sz);
void *kn_xrealloc(void *p, size_t n);
/* "(3,4)" into buf (at least 200 bytes). */
const char *kn_shape_str(char *buf, int ndim, const int64_t *shape);
int kn_debug_level(void);
uint64_t kn_hash_bytes(uint64_t h, const void *p, size_t n);
double kn_now(void); /* seconds, monotonic */
/* A growable NUL-terminated string (zero-initialize; s is malloc'ed, the owner frees it). */
typedef struct {
  char *s;
  size_t n, cap;
} kn_sbuf;
void kn_sbuf_put(kn_sbuf *b, const char *s, size_t n);
/* A byte range of a text (a chat message's place in a rendered template). */
typedef struct {
  size_t off, len;
} kn_text_span;
void kn_sbuf_printf(kn_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- graph IR ----------------------------------------------------------------------------
 * One node type, hash-consed: structurally equal nodes are the same pointer. A realized node
 * is taken out of the table and turned into a BUFFER leaf in place, dropping its sources. */
typedef enum {
  N_BUFFER,
  N_CONST,
  /* unary */
  N_NEG,
  N_EXP2,
  N_LOG2,
  N_SIN,
  N_SQRT,
  N_RECIP,
  N_CAST,
  N_BITCAST,
  /* binary */
  N_ADD,
  N_MUL,
  N_MAX,
  N_CMPLT,
  N_CMPNE,
  N_IDIV,
  N_MOD,
  N_AND,
  N_OR,
  N_XOR,
  N_SHL,
  N_SHR,
  N_DOT4, /* i32 from two u32: the bytes of src0 (unsigned) times those of src1 (signed) */
  /* ternary */
  N_WHERE,
  /* reduce: arg[0] = N_ADD or N_MAX, arg[1] = bitmask of reduced axes (kept as size 1) */
  N_REDUCE,
  /* movement: arg holds the new shape / permutation / (before,after) pairs / (start,end)
   * pairs / flip mask */
  N_RESHAPE,
  N_PERMUTE,
  N_EXPAND,
  N_PAD,
  N_SHRINK,
  N_FLIP,
  /* src0 = table (V, ...), src1 = integer ids: out[i.., j..] = table[ids[i..], j..], zero where
   * an id is outside [0, V) */
  N_GATHER,
  /* buffer ops */
  N_CONTIGUOUS,
  N_NOPS
} kn_op;

/* Data the IR holds for the layers above it (a node's buffer, a custom gradient) and releases
 * without knowing what it is: its first member is the function that frees it. */
typedef struct kn_held {
  void (*drop)(struct kn_held *h);
} kn_held;
static inline void kn_held_drop(void *h) {
  if (h) ((kn_held *)h)->drop((kn_held *)h);
}
struct kn_buffer;

typedef struct kn_node {
  /* identity (hashed) */
  uint8_t op, dtype, ndim, nsrc;
  uint8_t rg; /* requires grad: a gradient may flow through it (derived from sources) */
  int16_t device;
  int64_t shape[KILN_MAX_DIMS];
  struct kn_node *src[3];
  int64_t arg[2 * KILN_MAX_DIMS];
  double cval; /* N_CONST value */
  /* bookkeeping */
  uint64_t hash;
  struct kn_node *chain; /* hash bucket chain */
  int64_t refs;
  struct kn_buffer *buf; /* the data (runtime): always for N_BUFFER; for a realized rg node,
                            which keeps its sources for backward */
  struct kn_node *grad;  /* accumulated gradient of a requires-grad leaf */
  struct kn_vjp *vjp;    /* a custom gradient for more inputs (kn_custom_grad), or NULL */
  int mark;              /* scheduler scratch */
  bool weights;          /* a BUFFER read in place by every step (model weights): the scheduler
                            recomputes its views where they are read and never stores them */
} kn_node;

extern const char *const kn_op_names[N_NOPS];
static inline bool kn_is_unary(int op) { return op >= N_NEG && op <= N_BITCAST; }
static inline bool kn_is_binary(int op) { return op >= N_ADD && op <= N_DOT4; }
static inline bool kn_is_alu(int op) { return op >= N_NEG && op <= N_WHERE; }
static inline bool kn_is_movement(int op) { return op >= N_RESHAPE && op <= N_FLIP; }
static inline bool kn_is_cmp(int op) { return op == N_CMPLT || op == N_CMPNE; }

int64_t kn_numel(int ndim, const int64_t *shape);
/* Returns a new reference to the unique node with these fields (sources are not consumed). */
kn_node *kn_node_make(int op, int dtype, int device, int ndim, const int64_t *shape, int nsrc,
                      kn_node *const *src, const int64_t *arg, int narg, double cval);
kn_node *kn_node_buffer(int dtype, int device, int ndim, const int64_t *shape,
                        struct kn_buffer *buf);
/* Rows [r0, r1) of a stored tensor as a stored tensor of its own over the same memory (a
 * buffer view): kernels read it from its start, so they do not depend on r0. NULL with an
 * error where the device refuses the view (OpenCL: an offset off its base alignment). */
kiln_tensor *kn_rows_view(kiln_tensor *x, int64_t r0, int64_t r1);
/* A new identity view of v equal to no other node (so never shared), requiring grad if rg. */
kn_node *kn_node_unique_view(kn_node *v, bool rg);

/* Custom gradients (autograd.c). kn_custom_grad(value, n, in, fn, iarg) returns value (the
 * same data; its own gradient path is kept) that additionally sends gradient to in[0..n): in
 * backward, fn(g, in, grads, iarg) fills grads[i] = d loss / d in[i] (or NULL) given g = d loss
 * / d value. The caller computes value from detached copies of in, so this is the only path
 * from value back to them: an op whose primitive gradient would be slow states its own. */
typedef void (*kn_vjp_fn)(kiln_tensor *g, kiln_tensor *const *in, kiln_tensor **grads,
                          const int64_t *iarg);
#define KN_VJP_MAX 4
typedef struct kn_vjp {
  kn_held held;
  kn_vjp_fn fn;
  int n;
  kn_node *in[KN_VJP_MAX];
  int64_t iarg[8];
} kn_vjp;
kiln_tensor *kn_custom_grad(kiln_tensor *value, int n, kiln_tensor *const *in, kn_vjp_fn fn,
                            const int64_t *iarg);
void kn_node_ref(kn_node *n);
void kn_node_unref(kn_node *n);
/* Gives a computed node its data. A node without rg becomes a BUFFER leaf and drops its
 * sources; a node with rg keeps them, since backward may still walk through it. */
void kn_node_set_realized(kn_node *n, struct kn_buffer *buf);
static inline bool kn_is_realized(const kn_node *n) { return n->buf != NULL; }
extern bool kn_grad_enabled;
int64_t kn_nodes_live(void);

/* ---- tensor handles (front end) ---- */
struct kiln_tensor {
  kn_node *node;
  int scope; /* index in the scope stack */
  int64_t slot;
};
kiln_tensor *kn_wrap(kn_node *n); /* takes ownership of one reference; NULL stays NULL */
/* Marks a stored tensor as model weights, as kiln_from_blob does (see kn_node.weights). */
void kn_mark_weights(kiln_tensor *t);

/* ---- dtypes ----------------------------------------------------------------------------- */
bool kn_dtype_is_unsigned(int dt);
bool kn_dtype_is_int(int dt); /* integers, not bool */
int kn_dtype_bits(int dt);
/* dtype a kernel computes in for values of dt (f16/bf16 compute as f32) */
int kn_compute_dtype(int dt);

/* ---- scheduler: graph -> kernels ----------------------------------------------------------- */
typedef struct {
  kn_node *out;     /* the node this kernel computes into a new buffer */
  kn_node *reduce;  /* the one reduce fused into it, or NULL */
  kn_node **inputs; /* materialized nodes read (BUFFER after earlier kernels ran) */
  int ninputs;
} kn_sched_item;
typedef struct {
  kn_sched_item *items;
  int nitems;
} kn_schedule;
int kn_schedule_build(int nroots, kn_node *const *roots, kn_schedule *out);
void kn_schedule_free(kn_schedule *s);
/* Runs a schedule: lowers, compiles (cached), allocates and launches. */
int kn_schedule_run(kn_schedule *s);

/* ---- codegen: the linear low-level program --------------------------------------------------
 * A lop's sources index earlier lops. ALU lops reuse the graph op codes. Launch dim d runs
 * global[d] work-items in work-groups of local[d]: L_GIDX is a work-item's index along it,
 * L_GROUP its group's, L_LIDX its index inside the group. */
enum {
  L_CONST = N_NOPS, /* fval / ival by dtype */
  L_GIDX,           /* the work-item's index along launch dim ival, in [0, arg): parallel */
  L_GROUP,          /* the work-group's index along launch dim ival, in [0, arg) */
  L_LIDX,           /* the work-item's index in its group along launch dim ival, in [0, arg) */
  L_RANGE,          /* a sequential loop in one work-item: arg = bound, arg2 = its L_END;
                     * src0 (or -1): a bool, the loop has no trips where it is false */
  L_END,            /* closes src[0] */
  L_LOAD,           /* arg = buffer slot, src0 = index, src1 = valid (or -1) */
  L_STORE,          /* arg = buffer slot, src0 = index, src1 = value, src2 = guard (or -1) */
  L_ACC,            /* accumulator: fval/ival = initial value, arg = N_ADD / N_MAX; arg2 > 1:
                       an array of arg2 lanes */
  L_ACCUP,          /* src0 = acc, src1 = value: acc = acc (op) value; src2 = lane index */
  L_LANE,           /* src0 = an accumulator array, arg = lane: its value */
  L_DEFLOCAL,       /* an array of arg elements in the work-group's local memory */
  L_LOCSTORE,       /* src0 = local array, src1 = index, src2 = value */
  L_LOCLOAD,        /* src0 = local array, src1 = index */
  L_BARRIER,        /* every work-item of the group reaches it before any goes on; local
                       stores before it are seen by loads after it */
  L_NLOPS
};
typedef struct {
  uint8_t op, dtype;
  uint8_t vec; /* > 1: written as vectors of vec lanes of its lane loop (codegen/vectorize.c) */
  int32_t src[3];
  int64_t arg, arg2;
  int64_t ival; /* integer constants; for launch indices: the launch dim */
  double fval;  /* float constants */
} kn_lop;

/* Optimizations are data: a list of transforms applied to a kernel as it is lowered. Each
 * device says which kinds it supports (kn_devcaps.opts). */
enum {
  KN_OPT_UPCAST, /* axis = global dim (the output's dims larger than 1): amt outputs along it per
                    work-item (a register tile, unrolled) */
  KN_OPT_SPLIT,  /* the innermost reduce axis walked in amt accumulator lanes (vector code) */
  KN_OPT_BLOCK,  /* rows of global dim 0 in blocks of amt inside the loop over the last dim */
  KN_OPT_GROUP,  /* reduce axis `axis` (a dim of the reduce's source) split over the amt
                    work-items of a group, partial results combined through local memory */
  KN_OPT_LOCAL,  /* global dim axis in work-groups of amt work-items */
  KN_OPT_UNROLL, /* reduce axis `axis` (a dim of the reduce's source) walked amt elements per
                    loop step, the body written amt times (the same order of accumulation) */
  KN_OPT_PADTO,  /* global dim axis launched as the next multiple of amt (work-items past the
                    end compute a clamped index and do not store), so UPCAST, LOCAL and BLOCK
                    apply to sizes they do not divide */
  KN_OPT_LANES,  /* global dim axis walked amt outputs at a time as the lanes of one accumulator
                    array: the innermost reduce loop runs over them (vector code where the
                    reduce's operands are contiguous along that dim) */
  KN_NOPT_KINDS
};
#define KN_OPT_BIT(x) (1u << (x))
#define KN_OPT_ALL ((1u << KN_NOPT_KINDS) - 1)
#define KN_MAX_OPTS 8
typedef struct {
  int16_t op, axis;
  int32_t amt;
} kn_opt;
typedef struct {
  int n;
  kn_opt o[KN_MAX_OPTS];
} kn_opts;
extern const char *const kn_opt_names[KN_NOPT_KINDS];

typedef struct {
  kn_lop *ops;
  int nops;
  int nbufs; /* slot 0 is the output */
  uint8_t buf_dtype[64];
  int64_t buf_numel[64];
  int nglobal;                       /* launch dims (at most the device's caps.max_dims) */
  int64_t global[2 * KILN_MAX_DIMS]; /* work-items along each launch dim */
  int64_t local[2 * KILN_MAX_DIMS];  /* work-group size along each (1: no groups) */
  bool groups;                       /* uses L_GROUP / L_LIDX: local[] is the group's shape */
  char name[96];
  kn_opts opts; /* the optimizations applied */
  double flops; /* estimated per launch */
  double bytes; /* estimated memory traffic per launch */
} kn_kernel;

/* Lowers one scheduled kernel to a linear program for a device with caps, with the
 * optimizations opts (NULL: the heuristic's, kn_heuristic). Slots: 0 = output, 1.. = item
 * inputs. NULL with an error when opts do not apply to this kernel or device. */
struct kn_devcaps_;
kn_kernel *kn_lower(const kn_sched_item *it, const struct kn_devcaps_ *caps, const kn_opts *opts);
/* The heuristic's optimizations for item it on a device with caps. */
void kn_heuristic(const kn_sched_item *it, const struct kn_devcaps_ *caps, kn_opts *out);
/* The global dims of it (the output's dims larger than 1); returns their number. */
int kn_lower_gshape(const kn_sched_item *it, int64_t *gshape);
/* Marks the lane loops of k that can be written as vectors of up to width lanes (kn_lop.vec). */
void kn_vectorize(kn_kernel *k, int width);
void kn_kernel_free(kn_kernel *k);
void kn_kernel_print(FILE *f, const kn_kernel *k);
/* "UPCAST(0,4) SPLIT(0,8)": opts as text (for DEBUG and the search's cache) */
void kn_opts_format(const kn_opts *o, char *out, size_t n);
int kn_opts_parse(const char *s, kn_opts *o); /* < 0 if s is not such a list */
bool kn_opts_equal(const kn_opts *a, const kn_opts *b);
/* The list with upcast factor up[g] for each global dim, then LANES of global dim lanes_dim
 * (>= 0) or else SPLIT (lanes 0: as the heuristic picks it, 1: none, k: k lanes where they
 * divide the innermost reduce axis), and BLOCK as the heuristic picks them for those factors. */
void kn_opts_complete(const kn_sched_item *it, const struct kn_devcaps_ *caps, const int64_t *up,
                      int64_t lanes, int lanes_dim, kn_opts *out);
enum { KN_OUT_LANES = 8 }; /* outputs per accumulator array where the heuristic picks LANES */

/* ---- renderers -------------------------------------------------------------------------- */
/* A dialect: how one C-like language spells what the low-level program says (render/). */
typedef struct kn_dialect kn_dialect;
extern const kn_dialect kn_dialect_c, kn_dialect_cl, kn_dialect_cuda;
/* Source of kernel k in dialect d (malloc'ed; the caller frees). The C dialect's entry point
 * is `void NAME(void **bufs, long start, long end)`, running global[0] indices [start, end). */
char *kn_render(const kn_dialect *d, const kn_kernel *k);

/* ---- ggml storage (nn/quant.c) ----------------------------------------------------------- */
/* The dtype ggml `type` is stored as: its float type, or u8 for block formats. */
kiln_dtype kn_ggml_storage(int type);
/* f32 values of rows x cols elements of `type` held in raw (dtype kn_ggml_storage(type)):
 * (rows, cols), or runs (rows, blocks, runs per block, 16) (see kiln_dequantize_runs). */
kiln_tensor *kn_ggml_values(kiln_tensor *raw, int type, int64_t rows, int64_t cols, bool runs);
/* GGUF tensor `name` as stored, (rows, cols) floats or (rows, blocks, block bytes) u8; NULL
 * with an error if absent or of a type kiln cannot compute with. */
struct kiln_gguf;
kiln_tensor *kn_gguf_stored(const struct kiln_gguf *g, const char *name);
/* A Q4_1 or Q8_0 matrix of the file repacked for 8-bit products: u32 words (rows/8, blocks,
 * 6 or 10, 8), 8 rows interleaved (nn/quant.c); NULL (no error) when the tensor is of another
 * type or its rows are not a multiple of 8. */
kiln_tensor *kn_gguf_words(const struct kiln_gguf *g, const char *name);
/* Activations quantized to 8 bits per block of 32 (kn_quantize8, nn/quant.c): packed words,
 * scales and sums of the rows of x (all NULL with an error when x's rows do not split into
 * blocks), made once for every product that reads x. */
typedef struct {
  kiln_tensor *words, *s, *qs;
} kn_act8;
kn_act8 kn_quantize8(kiln_tensor *x);
/* x (..., K) times the transpose of words w (rows/8, K/32, 6 or 10, 8), plus b (or NULL), the
 * products summed as DOT4s; xa: x already quantized (kn_quantize8), or NULL. */
kiln_tensor *kn_linear_words(kiln_tensor *x, const kn_act8 *xa, kiln_tensor *w, kiln_tensor *b);

/* ---- runtime: the device interface -------------------------------------------------------
 * A device's memory is opaque to everything above the runtime: a handle is whatever the
 * device hands out (a host pointer on CPU and INTERP, a cl_mem on CL, a device address on
 * CUDA), and data moves only through these calls. Launches may run asynchronously; copyout and
 * synchronize wait for the launches before them. */
typedef struct kn_devcaps_ {
  int max_dims;      /* launch dims (global and local) a kernel may use */
  int64_t max_local; /* work-items of one work-group */
  int64_t local_mem; /* bytes of local memory a work-group may use */
  unsigned opts;     /* the optimization kinds it supports (KN_OPT_BIT) */
  int vec_width;     /* lanes of the vector values its language writes (0: none) */
  bool index32;      /* index math in 32 bits where value ranges allow (GPUs: 64-bit integer
                        math takes several instructions there) */
  bool host_memory;  /* handles are host pointers: kernels may read caller memory in place */
  bool pool;         /* launch dim 0 runs on a thread pool and the others are loops (CPU): dim
                        0 is the outermost; elsewhere it is the innermost (adjacent work-items
                        touch adjacent memory) */
} kn_devcaps;

typedef struct kn_device kn_device;
struct kn_device {
  const char *name;
  const struct kn_dialect *dialect; /* the language its kernels are written in; NULL: it runs
                                       the low-level program itself (INTERP) */
  kn_devcaps caps;
  /* NULL when the device works here, else why not in one line (missing library, no GPU);
   * fills caps the first time */
  const char *(*probe)(kn_device *d);
  void *(*alloc)(kn_device *d, size_t n, bool zeroed); /* NULL with an error when out of memory */
  void (*free)(kn_device *d, void *h);
  /* a handle to bytes [off, off + n) of h, valid while h is; free_view releases it */
  void *(*view)(kn_device *d, void *h, size_t off, size_t n);
  void (*free_view)(kn_device *d, void *v);
  void (*copyin)(kn_device *d, void *dst, size_t off, const void *src, size_t n);
  void (*copyout)(kn_device *d, void *dst, const void *src, size_t off, size_t n);
  void (*copy)(kn_device *d, void *dst, size_t doff, void *src, size_t soff, size_t n);
  void (*fill)(kn_device *d, void *dst, size_t off, size_t n); /* zeros */
  /* a program from a kernel and its source in the device's dialect (NULL for INTERP); NULL
   * with an error set on failure */
  void *(*compile)(kn_device *d, const kn_kernel *k, const char *src);
  /* may start building k's program in the background, for a compile of the same source soon
   * (NULL: the device does not build ahead) */
  void (*prefetch)(kn_device *d, const kn_kernel *k, const char *src);
  int (*launch)(kn_device *d, void *prog, const kn_kernel *k,
                void *const *bufs); /* < 0: error set */
  void (*free_program)(kn_device *d, void *prog);
  /* n recorded launches (programs, their kernels and buffers) as one submission to replay
   * (CUDA: a graph); NULL where the device has none or it cannot be built, and the launches
   * are replayed one by one. graph_launch < 0: error set. All three may be NULL. */
  void *(*graph)(kn_device *d, int n, void *const *progs, const kn_kernel *const *ks,
                 void *const *const *bufs);
  int (*graph_launch)(kn_device *d, void *g);
  void (*graph_free)(kn_device *d, void *g);
  void (*synchronize)(kn_device *d);
  /* seconds one launch of prog takes on scratch buffers of k's sizes, or < 0 if it cannot be
   * timed; NULL: the search times launches through launch and synchronize */
  double (*time_program)(kn_device *d, void *prog, const kn_kernel *k);
  void (*release)(kn_device *d); /* returns memory kept for reuse to the system; may be NULL */
};

/* The registry (device.c): devices by index, in a fixed order; each probes on first use. */
int kn_device_count(void);
kn_device *kn_device_get(int idx);
int kn_device_find(const char *name); /* index, or -1 */
int kn_device_default(void);
/* Whether device idx works here; if not, *why says why (not owned). */
bool kn_device_usable(int idx, const char **why);
extern kn_device kn_dev_cpu, kn_dev_interp, kn_dev_cl, kn_dev_cuda;

/* Buffers: a device allocation, or a view at an offset into one (which keeps it alive). */
typedef struct kn_buffer {
  kn_held held; /* first: how the IR releases it */
  kn_device *dev;
  void *h; /* the device's handle */
  size_t nbytes;
  int refs;               /* the holder, and each view */
  struct kn_buffer *base; /* a view's buffer, or NULL */
  bool external;          /* caller memory (a host device's kiln_from_blob): never freed */
} kn_buffer;
kn_buffer *kn_buffer_alloc(int device, size_t nbytes);         /* zeroed; NULL if out of memory */
kn_buffer *kn_buffer_alloc_scratch(int device, size_t nbytes); /* contents undefined */
/* A buffer over caller-owned host memory (the device must have caps.host_memory). */
kn_buffer *kn_buffer_wrap(int device, void *ptr, size_t nbytes);
kn_buffer *kn_buffer_view(kn_buffer *b, size_t off, size_t n); /* NULL with an error if refused */
void kn_buffer_free(kn_buffer *b);
void kn_buffer_write(kn_buffer *b, size_t off, const void *src, size_t n);
void kn_buffer_read(kn_buffer *b, void *dst, size_t off, size_t n);
/* n bytes from src at soff to dst at doff: on one device by its copy, across devices through
 * the host. */
void kn_buffer_copy(kn_buffer *dst, size_t doff, kn_buffer *src, size_t soff, size_t n);

/* The disk cache shared by every device (cache.c): files under $KILN_CACHE/<dir>/, each with a
 * checksum file beside it, so a torn or corrupt entry is a miss, never a load. */
const char *kn_cache_dir(void);
void kn_cache_path(char *out, size_t n, const char *dir, uint64_t key, const char *ext);
int kn_cache_mkdir(const char *dir); /* creates $KILN_CACHE/dir; < 0 if it cannot */
bool kn_cache_valid(const char *path);
/* Moves the finished file tmp to path and records its checksum. */
int kn_cache_commit(const char *tmp, const char *path);
void *kn_cache_load(const char *path, size_t *n); /* malloc'ed bytes of a valid entry */
int kn_cache_store(const char *path, const void *p, size_t n);

/* CUDA C source compiled by NVRTC for arch (sm_90, ...) without a GPU: < 0 with the log as
 * the error. */
int kn_cuda_check(const char *src, const char *name, const char *arch);
/* The CPU device's pieces other files use. */
void kn_interp_run(const kn_kernel *k, void *const *bufs, long start, long end);
extern bool kn_quick_compile; /* while set, the CPU device builds with one compiler only */

/* ---- running schedules (schedule/run.c) and the search (codegen/search.c) ---- */
extern kiln_stats kn_stats;
void kn_program_cache_clear(void);
/* The kernel to run item it on device d: the heuristic's k0 or a faster lowering of the same
 * item found by timing candidates (the verdict cached on disk under key k1, k2). A verdict on
 * disk applies to every reduce kernel, also those too small for this run to search (what a
 * `kiln tune` run with BEAM searched); kn_search_cached only looks it up. Both free k0 when
 * they return another kernel. */
kn_kernel *kn_search(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1,
                     uint64_t k2);
kn_kernel *kn_search_cached(const kn_sched_item *it, kn_device *d, kn_kernel *k0, uint64_t k1,
                            uint64_t k2);
bool kn_search_wanted(const kn_device *d, const kn_kernel *k);
int kn_beam_width(void); /* BEAM=N: N, else 0 */
/* The search's time budget for this run, shared with a device's own trials (the CPU's race of
 * two compilers): whether some is left, and time spent from it. */
bool kn_search_budget_left(void);
void kn_search_charge(double seconds);

#endif
