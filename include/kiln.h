/* kiln.h — the public API of kiln: lazy tensors, realized by a fusing compiler.
 * Every function is prefixed kiln_. Tensors are opaque handles owned by the current scope. */
#ifndef KILN_H
#define KILN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_MAX_DIMS 8

/* ---- dtypes ------------------------------------------------------------------------------
 * Promotion (kiln_promote): bool < every integer < every float.
 *   Two floats: the wider wins; f16 with bf16 gives f32.
 *   Two integers of the same signedness: the wider wins.
 *   Signed with unsigned: the signed type wide enough for both (u8+i8 -> i16, u32+i32 -> i64,
 *   u64 with any signed -> i64 as there is nothing wider).
 *   A float with an integer: the float.
 * Half types (f16, bf16) are stored as 16 bits and computed in f32 inside a kernel; the
 * result is rounded to 16 bits when it is stored or cast. */
typedef enum {
  KILN_BOOL,
  KILN_U8,
  KILN_I8,
  KILN_U16,
  KILN_I16,
  KILN_U32,
  KILN_I32,
  KILN_U64,
  KILN_I64,
  KILN_F16,
  KILN_BF16,
  KILN_F32,
  KILN_F64,
  KILN_NDTYPES
} kiln_dtype;

const char *kiln_dtype_name(kiln_dtype dt);
size_t kiln_dtype_size(kiln_dtype dt);
bool kiln_dtype_is_float(kiln_dtype dt);
kiln_dtype kiln_promote(kiln_dtype a, kiln_dtype b);

/* ---- errors ------------------------------------------------------------------------------
 * Functions returning a tensor return NULL on error; those returning int return < 0.
 * kiln_error() returns the message of the first error since the last kiln_clear_error(),
 * e.g. "matmul: inner dims differ: (3,4) @ (5,2)". Any op given a NULL input returns NULL
 * and keeps the first message, so a chain of calls can be checked once at its end. */
const char *kiln_error(void);
void kiln_clear_error(void);

/* ---- devices -----------------------------------------------------------------------------
 * Devices: "CPU" (generated C, compiled and cached), "INTERP" (the reference interpreter),
 * "CL" (OpenCL, through libOpenCL.so.1), "CUDA" (NVIDIA GPUs, through libcuda.so.1 and NVRTC).
 * The default is $KILN_DEVICE or CPU. New tensors are created on the default device. */
int kiln_set_device(const char *name); /* < 0 and an error if unknown or not working here */
const char *kiln_get_device(void);
int kiln_device_count(void);
const char *kiln_device_name(int i);
/* NULL if device i works here, else why not, in one line (a missing library, no GPU). */
const char *kiln_device_status(int i);

/* ---- ownership ---------------------------------------------------------------------------
 * Every tensor belongs to the innermost open scope at its creation (a global scope exists).
 * kiln_scope_end frees every tensor of the scope not moved out with kiln_keep. */
void kiln_scope_begin(void);
void kiln_scope_end(void);
typedef struct kiln_tensor kiln_tensor;
kiln_tensor *kiln_keep(kiln_tensor *t);    /* moves t to the enclosing scope; returns t */
kiln_tensor *kiln_persist(kiln_tensor *t); /* moves t to the global scope (lives until freed) */
void kiln_free(kiln_tensor *t);            /* frees t now (optional) */

/* ---- creation (lazy) --------------------------------------------------------------------- */
kiln_tensor *kiln_empty(kiln_dtype dt, int ndim, const int64_t *shape);
kiln_tensor *kiln_zeros(kiln_dtype dt, int ndim, const int64_t *shape);
kiln_tensor *kiln_ones(kiln_dtype dt, int ndim, const int64_t *shape);
kiln_tensor *kiln_full(kiln_dtype dt, int ndim, const int64_t *shape, double value);
kiln_tensor *kiln_scalar(kiln_dtype dt, double value); /* 0-d */
kiln_tensor *kiln_arange(double start, double stop, double step, kiln_dtype dt);
/* Uniform [0,1) and standard normal f32, reproducible from the seed on every device. */
kiln_tensor *kiln_rand(int ndim, const int64_t *shape, uint64_t seed);
kiln_tensor *kiln_randn(int ndim, const int64_t *shape, uint64_t seed);
/* Copies numel*dtype_size bytes from data. */
kiln_tensor *kiln_from_data(kiln_dtype dt, int ndim, const int64_t *shape, const void *data);
/* Like kiln_from_data but without a copy where the device reads host memory (CPU, INTERP):
 * the tensor reads data in place (e.g. a memory-mapped model file), so data must stay valid
 * and unchanged while any tensor computed from it may still be realized. */
/* Copies src (realized first) into rows [row, row + src rows) of dst in place; dst must be a
 * stored tensor (created with empty/from_data or realized) and src must match its other dims
 * and dtype. Lazy tensors that read dst see the new rows when they are realized. */
int kiln_write_rows(kiln_tensor *dst, int64_t row, kiln_tensor *src);
/* The same for rows [src_row, src_row + n) of src (its other dims as dst's). */
int kiln_copy_rows(kiln_tensor *dst, int64_t row, kiln_tensor *src, int64_t src_row, int64_t n);
kiln_tensor *kiln_from_blob(kiln_dtype dt, int ndim, const int64_t *shape, const void *data);

/* ---- inspection ------------------------------------------------------------------------- */
int kiln_ndim(const kiln_tensor *t);
int64_t kiln_dim(const kiln_tensor *t, int axis); /* negative axis counts from the end */
const int64_t *kiln_shape(const kiln_tensor *t);
int64_t kiln_numel(const kiln_tensor *t);
kiln_dtype kiln_dtype_of(const kiln_tensor *t);

/* ---- elementwise (numpy broadcasting; operands promoted with kiln_promote) ----------------- */
typedef enum {
  KILN_NEG,
  KILN_ABS,
  KILN_EXP,
  KILN_EXP2,
  KILN_LOG,
  KILN_LOG2,
  KILN_SIN,
  KILN_COS,
  KILN_SQRT,
  KILN_RSQRT,
  KILN_RECIP,
  KILN_RELU,
  KILN_SIGMOID,
  KILN_TANH,
  KILN_NOT,
  KILN_SIGN,
  KILN_SQUARE,
  KILN_NUNARY
} kiln_unary_op;
kiln_tensor *kiln_unary(kiln_unary_op op, kiln_tensor *x);
kiln_tensor *kiln_neg(kiln_tensor *x);
kiln_tensor *kiln_exp(kiln_tensor *x);
kiln_tensor *kiln_log(kiln_tensor *x);
kiln_tensor *kiln_sqrt(kiln_tensor *x);
kiln_tensor *kiln_relu(kiln_tensor *x);

typedef enum {
  KILN_ADD,
  KILN_SUB,
  KILN_MUL,
  KILN_DIV,
  KILN_MAXIMUM,
  KILN_MINIMUM,
  KILN_MOD,
  KILN_AND,
  KILN_OR,
  KILN_XOR,
  KILN_SHL,
  KILN_SHR,
  KILN_POW,
  KILN_LT,
  KILN_LE,
  KILN_GT,
  KILN_GE,
  KILN_EQ,
  KILN_NE,
  KILN_DOT4,
  KILN_NBINARY
} kiln_binary_op;
/* DIV on integers truncates toward zero; MOD takes the sign of the dividend (as C).
 * Comparisons return bool. AND/OR/XOR/SHL/SHR take integers or bools. DOT4 takes integers
 * as u32 words of four bytes and returns i32: the bytes of a (unsigned, 0..255) times those
 * of b (signed, -128..127), summed (the step of 8-bit products; one instruction on CPUs with
 * VNNI and GPUs with dp4a). */
kiln_tensor *kiln_binary(kiln_binary_op op, kiln_tensor *a, kiln_tensor *b);
kiln_tensor *kiln_add(kiln_tensor *a, kiln_tensor *b);
kiln_tensor *kiln_sub(kiln_tensor *a, kiln_tensor *b);
kiln_tensor *kiln_mul(kiln_tensor *a, kiln_tensor *b);
kiln_tensor *kiln_div(kiln_tensor *a, kiln_tensor *b);
/* op with a scalar of a's dtype on the right: kiln_binary_s(KILN_MUL, x, 2.0). */
kiln_tensor *kiln_binary_s(kiln_binary_op op, kiln_tensor *a, double b);
kiln_tensor *kiln_where(kiln_tensor *cond, kiln_tensor *a, kiln_tensor *b);
kiln_tensor *kiln_cast(kiln_tensor *x, kiln_dtype dt);
kiln_tensor *kiln_bitcast(kiln_tensor *x, kiln_dtype dt); /* same element size only */

/* ---- reductions --------------------------------------------------------------------------
 * axes may be negative; naxes == 0 reduces over every axis. keepdim keeps reduced axes as 1.
 * sum of bool/ints accumulates in i64 (u64 for unsigned); mean returns a float. */
typedef enum { KILN_SUM, KILN_MAX, KILN_MIN, KILN_MEAN, KILN_PROD, KILN_NREDUCE } kiln_reduce_op;
kiln_tensor *kiln_reduce(kiln_reduce_op op, kiln_tensor *x, int naxes, const int *axes,
                         bool keepdim);
kiln_tensor *kiln_sum(kiln_tensor *x, int naxes, const int *axes, bool keepdim);
kiln_tensor *kiln_max(kiln_tensor *x, int naxes, const int *axes, bool keepdim);
kiln_tensor *kiln_mean(kiln_tensor *x, int naxes, const int *axes, bool keepdim);
/* Index (i64) of the first maximum / minimum along axis. */
kiln_tensor *kiln_argmax(kiln_tensor *x, int axis, bool keepdim);
kiln_tensor *kiln_argmin(kiln_tensor *x, int axis, bool keepdim);
kiln_tensor *kiln_softmax(kiln_tensor *x, int axis);
kiln_tensor *kiln_log_softmax(kiln_tensor *x, int axis);

/* ---- movement (views: they copy nothing) -------------------------------------------------- */
kiln_tensor *kiln_reshape(kiln_tensor *x, int ndim, const int64_t *shape); /* one -1 allowed */
kiln_tensor *kiln_permute(kiln_tensor *x, const int *perm);
kiln_tensor *kiln_transpose(kiln_tensor *x, int a, int b);
kiln_tensor *kiln_expand(kiln_tensor *x, int ndim, const int64_t *shape); /* broadcast to shape */
/* before[i]/after[i] elements of value added around axis i. */
kiln_tensor *kiln_pad(kiln_tensor *x, const int64_t *before, const int64_t *after, double value);
/* Keeps [start[i], end[i]) of every axis. */
kiln_tensor *kiln_shrink(kiln_tensor *x, const int64_t *start, const int64_t *end);
/* Python-style slice of one axis: negative indices count from the end, step != 0. */
kiln_tensor *kiln_slice(kiln_tensor *x, int axis, int64_t start, int64_t stop, int64_t step);
kiln_tensor *kiln_flip(kiln_tensor *x, int naxes, const int *axes);
kiln_tensor *kiln_cat(int n, kiln_tensor *const *xs, int axis);
kiln_tensor *kiln_stack(int n, kiln_tensor *const *xs, int axis);
kiln_tensor *kiln_squeeze(kiln_tensor *x, int axis);
kiln_tensor *kiln_unsqueeze(kiln_tensor *x, int axis);
kiln_tensor *kiln_contiguous(kiln_tensor *x); /* forces a real buffer when realized */
/* Rows of table picked by integer ids: shape ids.shape + table.shape[1:], the row ids[i] of
 * table's dim 0 at i (zeros for an id outside [0, rows)). The gradient flows to table. */
kiln_tensor *kiln_take(kiln_tensor *table, kiln_tensor *ids);

/* ---- matmul: (..., n, k) @ (..., k, m) with broadcast batch dims; 1-d operands as numpy ---- */
kiln_tensor *kiln_matmul(kiln_tensor *a, kiln_tensor *b);
/* Eigen-decomposition of a symmetric (n, n) f32/f64 matrix (realized and solved on the host in
 * double precision with Jacobi rotations; for small n, at most 512): *values (n) in ascending order
 * and *vectors (n, n) with the unit eigenvector of values[i] in column i, both a's dtype, so a =
 * vectors @ diag(values) @ vectors^T. A non-symmetric or non-finite matrix is an error. */
int kiln_eigh(kiln_tensor *a, kiln_tensor **values, kiln_tensor **vectors);

/* ---- autograd ----------------------------------------------------------------------------
 * Mark leaf tensors (parameters) with kiln_set_requires_grad before using them. Ops on them
 * record the graph; kiln_backward(loss) adds d loss / d leaf into each leaf's gradient (lazy
 * tensors, so backward and the optimizer update fuse when realized). Gradients are f32-typed
 * like their leaves; only float leaves may require grad. */
int kiln_set_requires_grad(kiln_tensor *t, bool on); /* realizes t; < 0 if t is not float */
bool kiln_requires_grad(const kiln_tensor *t);
int kiln_backward(kiln_tensor *loss);         /* loss must have exactly one element */
kiln_tensor *kiln_grad(const kiln_tensor *t); /* a new handle on t's gradient; NULL if none */
/* Drops t's gradient. A gradient holds the graph that made it (which refers back to t), so
 * call this (optimizer steps do) before letting go of a parameter. */
void kiln_zero_grad(kiln_tensor *t);
/* Turns gradient recording off (e.g. for optimizer updates and evaluation); returns the old
 * state so callers can restore it. */
bool kiln_set_grad_enabled(bool on);
kiln_tensor *kiln_detach(kiln_tensor *t); /* same values, no gradient flows through */
/* dst takes src's value (same shape and dtype). A requires-grad leaf dst stays a leaf: src is
 * realized and dst keeps its flag (optimizers use this). Any other dst is assigned lazily and
 * computed when next realized (realize it each step, or its history grows). */
int kiln_assign(kiln_tensor *dst, kiln_tensor *src);

/* ---- nn: layers as functions over the Tensor API -------------------------------------------
 * Shapes: x (N, C, H, W) for 2-d layers; weights as in PyTorch. b may be NULL (no bias). */
kiln_tensor *kiln_linear(kiln_tensor *x, kiln_tensor *w,
                         kiln_tensor *b); /* x @ w^T + b, w (out, in) */
/* kiln_linear with w given as (out, d1, ..., dk), d1 * ... * dk = in, e.g. the runs of
 * kiln_dequantize_runs: the reduce walks those dims as nested loops, the last innermost. */
kiln_tensor *kiln_linear_runs(kiln_tensor *x, kiln_tensor *w, kiln_tensor *b);
/* w (O, C/groups, kh, kw); stride, padding, dilation are (h, w) pairs. */
kiln_tensor *kiln_conv2d(kiln_tensor *x, kiln_tensor *w, kiln_tensor *b, const int *stride,
                         const int *padding, const int *dilation, int groups);
kiln_tensor *kiln_max_pool2d(kiln_tensor *x, const int *kernel, const int *stride,
                             const int *padding);
kiln_tensor *kiln_avg_pool2d(kiln_tensor *x, const int *kernel, const int *stride,
                             const int *padding);
/* Training: normalizes with batch statistics over (N, H, W) and, when running_mean/var are
 * given, updates them in place (momentum as PyTorch, unbiased variance). Eval: uses them. */
kiln_tensor *kiln_batch_norm2d(kiln_tensor *x, kiln_tensor *weight, kiln_tensor *bias,
                               kiln_tensor *running_mean, kiln_tensor *running_var, bool training,
                               double momentum, double eps);
/* Normalizes over the last naxes dims; weight/bias have those dims' shape (or NULL). */
kiln_tensor *kiln_layer_norm(kiln_tensor *x, int naxes, kiln_tensor *weight, kiln_tensor *bias,
                             double eps);
kiln_tensor *kiln_rms_norm(kiln_tensor *x, kiln_tensor *weight, double eps); /* over the last dim */
kiln_tensor *kiln_embedding(kiln_tensor *weight, kiln_tensor *ids); /* weight (V, D), ids int */
/* Zeroes each element with probability p and scales the rest by 1/(1-p); identity unless training.
 */
kiln_tensor *kiln_dropout(kiln_tensor *x, double p, uint64_t seed, bool training);
kiln_tensor *kiln_leaky_relu(kiln_tensor *x, double slope);
kiln_tensor *kiln_gelu(kiln_tensor *x); /* tanh approximation */
kiln_tensor *kiln_silu(kiln_tensor *x);
/* Mean cross-entropy of logits (N, C) against integer labels (N); label_smoothing in [0,1). */
kiln_tensor *kiln_cross_entropy(kiln_tensor *logits, kiln_tensor *labels, double label_smoothing);
kiln_tensor *kiln_mse_loss(kiln_tensor *a, kiln_tensor *b);

/* ---- parameters: an ordered set of named tensors (a model's state) ----------------------------
 * kiln_params_add takes the tensor out of the scopes: the set owns it until kiln_params_free. */
typedef struct kiln_params kiln_params;
kiln_params *kiln_params_new(void);
void kiln_params_free(kiln_params *p);
int kiln_params_add(kiln_params *p, const char *name, kiln_tensor *t); /* < 0 on a duplicate name */
int kiln_params_count(const kiln_params *p);
kiln_tensor *kiln_params_get(const kiln_params *p, int i);
const char *kiln_params_name(const kiln_params *p, int i);
kiln_tensor *kiln_params_find(const kiln_params *p, const char *name); /* NULL if absent */
/* safetensors files (8-byte little-endian header length, JSON header, raw data). */
int kiln_save_safetensors(const kiln_params *p, const char *path);
/* Reads every tensor of the file into a new set; every field is validated first. */
kiln_params *kiln_load_safetensors(const char *path);
/* Copies the file's tensors into p's tensors of the same names (shapes and dtypes must match;
 * every tensor of p must be present). */
int kiln_params_load(kiln_params *p, const char *path);

/* ---- optimizers ---------------------------------------------------------------------------
 * An optimizer updates the requires-grad tensors of a parameter set from their gradients. A
 * step builds every update lazily and realizes them in one schedule, then clears gradients. */
typedef struct kiln_optim kiln_optim;
kiln_optim *kiln_sgd(kiln_params *p, double lr, double momentum, double weight_decay,
                     bool nesterov);
/* Adam; decoupled = true gives AdamW (weight decay applied to the weights, not the gradient). */
kiln_optim *kiln_adam(kiln_params *p, double lr, double beta1, double beta2, double eps,
                      double weight_decay, bool decoupled);
int kiln_optim_step(kiln_optim *o);
void kiln_optim_set_lr(kiln_optim *o, double lr);
double kiln_optim_get_lr(const kiln_optim *o);
void kiln_optim_free(kiln_optim *o);
/* The optimizer's own state (moments, step count) as named tensors, e.g. to checkpoint it. */
kiln_params *kiln_optim_state(kiln_optim *o);
/* Learning-rate schedules: the rate at step (0-based) of total steps. */
double kiln_lr_cosine(int64_t step, int64_t total, double base_lr, double min_lr);
/* Linear warmup: base_lr * (step + 1) / warmup_steps while step < warmup_steps, then base_lr. */
double kiln_lr_warmup(int64_t step, int64_t warmup_steps, double base_lr);

/* ---- data --------------------------------------------------------------------------------- */
typedef struct {
  int64_t n, rows, cols;
  uint8_t *images; /* n * rows * cols pixels, row-major */
  uint8_t *labels; /* n */
} kiln_image_set;
/* Reads Fashion-MNIST (gzip IDX files) from dir, or from $KILN_DATA, or from
 * /usr/share/datasets/fashion-mnist when dir is NULL. A missing dataset is an error whose
 * message names the command that installs it. */
int kiln_fashion_mnist_load(const char *dir, bool train, kiln_image_set *out);
void kiln_image_set_free(kiln_image_set *s);

/* ---- GGUF model files ----------------------------------------------------------------------
 * kiln_gguf_open memory-maps a GGUF (v2 or v3) file and validates all of it (counts, lengths,
 * types, offsets, sizes, duplicates) before returning; a bad file is NULL and an error naming
 * the problem. Tensor data stays in the mapping (nothing is copied); the handle owns it until
 * kiln_gguf_close. Strings returned are NUL-terminated copies owned by the handle. */
typedef struct kiln_gguf kiln_gguf;
typedef enum { /* metadata value types, numbered as in the GGUF specification */
               KILN_GGUF_U8,
               KILN_GGUF_I8,
               KILN_GGUF_U16,
               KILN_GGUF_I16,
               KILN_GGUF_U32,
               KILN_GGUF_I32,
               KILN_GGUF_F32,
               KILN_GGUF_BOOL,
               KILN_GGUF_STRING,
               KILN_GGUF_ARRAY,
               KILN_GGUF_U64,
               KILN_GGUF_I64,
               KILN_GGUF_F64
} kiln_gguf_type;
typedef struct {
  const char *name;
  int type;        /* ggml tensor type code (0 F32, 1 F16, 2 Q4_0, ... 30 BF16) */
  int ndim;        /* 1..4 */
  int64_t dims[4]; /* GGUF order: dims[0] is the fastest-varying (a row's length) */
  int64_t numel;
  uint64_t offset; /* from the start of the data section */
  size_t nbytes;
  const void *data; /* inside the mapping */
} kiln_gguf_tensor;
kiln_gguf *kiln_gguf_open(const char *path);
void kiln_gguf_close(kiln_gguf *g);
int kiln_gguf_version(const kiln_gguf *g);
size_t kiln_gguf_file_size(const kiln_gguf *g);
/* general.alignment (32 when absent), and the file offset where the data section starts. */
int64_t kiln_gguf_alignment(const kiln_gguf *g);
int64_t kiln_gguf_data_offset(const kiln_gguf *g);
int64_t kiln_gguf_n_kv(const kiln_gguf *g);
const char *kiln_gguf_key(const kiln_gguf *g, int64_t i);        /* NULL when i is out of range */
int64_t kiln_gguf_find_key(const kiln_gguf *g, const char *key); /* -1 if absent */
/* Type of kv i; (kiln_gguf_type)-1 when i is out of range. */
kiln_gguf_type kiln_gguf_kv_type(const kiln_gguf *g, int64_t i);
const char *kiln_gguf_type_name(kiln_gguf_type t); /* "u32", "string", ...; "?" when unknown */
/* Scalars by key, converted: get_int takes any integer or bool value, get_float any number.
 * false when the key is absent or of another kind, or a u64 is above INT64_MAX for get_int
 * (out is then untouched). */
bool kiln_gguf_get_int(const kiln_gguf *g, const char *key, int64_t *out);
bool kiln_gguf_get_float(const kiln_gguf *g, const char *key, double *out);
const char *kiln_gguf_get_str(const kiln_gguf *g,
                              const char *key); /* NULL if absent/not a string */
/* Arrays by kv index: element type, length, element j as int/float/string (false/NULL when
 * the kv is not an array of that kind or j is out of range; arr_type gives (kiln_gguf_type)-1
 * and arr_len -1 for a kv that is not an array). Arrays of arrays are rejected by open. */
kiln_gguf_type kiln_gguf_arr_type(const kiln_gguf *g, int64_t i);
int64_t kiln_gguf_arr_len(const kiln_gguf *g, int64_t i);
bool kiln_gguf_arr_int(const kiln_gguf *g, int64_t i, int64_t j, int64_t *out);
bool kiln_gguf_arr_float(const kiln_gguf *g, int64_t i, int64_t j, double *out);
const char *kiln_gguf_arr_str(const kiln_gguf *g, int64_t i, int64_t j, size_t *len);
/* Printable form of a scalar kv (or "[type; N]" for an array) into buf; returns buf. Strings
 * are quoted with C escapes and, when too long for cap, cut as "abc..." (N bytes). */
const char *kiln_gguf_value_str(const kiln_gguf *g, int64_t i, char *buf, size_t cap);
/* The same for element j of array kv i ("" when there is no such element). */
const char *kiln_gguf_elem_str(const kiln_gguf *g, int64_t i, int64_t j, char *buf, size_t cap);
int64_t kiln_gguf_n_tensors(const kiln_gguf *g);
const kiln_gguf_tensor *kiln_gguf_tensor_at(const kiln_gguf *g, int64_t i);
const kiln_gguf_tensor *kiln_gguf_find_tensor(const kiln_gguf *g, const char *name);
const char *kiln_ggml_type_name(int type); /* "Q4_K"; "?" when unknown */
/* Elements per block and bytes per block of a ggml type; 0 when unknown. */
int64_t kiln_ggml_block_size(int type);
int64_t kiln_ggml_type_size(int type);

/* ggml block formats as lazy kiln ops: raw is a u8 tensor of rows*cols elements of `type`
 * (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL, IQ4_XS) in ggml blocks;
 * returns (rows, cols) f32 whose dequantization fuses into the kernels that read it. */
kiln_tensor *kiln_dequantize(kiln_tensor *raw, int type, int64_t rows, int64_t cols);
/* The same values shaped (rows, blocks, runs per block, 16): a row's elements in contiguous
 * runs, grouped by block (see kiln_linear_runs). */
kiln_tensor *kiln_dequantize_runs(kiln_tensor *raw, int type, int64_t rows, int64_t cols);
bool kiln_dequantize_supported(int type); /* also true for F32, F16, BF16 */
/* A GGUF tensor as a lazy f32 tensor (shape in kiln order: GGUF dims reversed) that reads the
 * mapped file in place; valid while g is open. */
kiln_tensor *kiln_gguf_weight(const kiln_gguf *g, const char *name);
/* A matrix (GGUF dims [cols, rows], cols a multiple of 16) as runs, see kiln_dequantize_runs
 * (float types: (rows, cols / 16, 1, 16)). */
kiln_tensor *kiln_gguf_weight_runs(const kiln_gguf *g, const char *name);

/* ---- tokenizers ---------------------------------------------------------------------------- */
/* Tokenizers built from GGUF metadata: byte-level BPE (tokenizer.ggml.model "gpt2", with the
 * pre-tokenizer named by tokenizer.ggml.pre: gpt-2, smollm, llama-bpe/llama3, qwen2, default)
 * and SentencePiece-style BPE ("llama"). A tokenizer is immutable once built: one may be used
 * from several threads at once. Token ids are int32_t; -1 means "none". */
typedef struct kiln_tokenizer kiln_tokenizer;
/* Reads the tokenizer.ggml.* keys of g; the result owns copies of everything it needs, so g may
 * be closed after. NULL and an error for a missing/ill-typed key or an unsupported model/pre. */
kiln_tokenizer *kiln_tokenizer_from_gguf(const kiln_gguf *g);
void kiln_tokenizer_free(kiln_tokenizer *t);
/* Encodes text[0..len) (any bytes; invalid UTF-8 is encoded byte by byte). add_bos puts the BOS
 * token first (when the vocabulary has one); parse_special matches control-token texts such as
 * "<|im_start|>" in the text (user-defined tokens are always matched). Writes at most cap ids
 * and returns how many there are (more than cap means out was too small); < 0 on error. */
int64_t kiln_tokenize(const kiln_tokenizer *t, const char *text, size_t len, bool add_bos,
                      bool parse_special, int32_t *out, int64_t cap);
/* The bytes one token decodes to (not NUL-terminated; *len set), owned by t. Control and
 * unknown tokens decode to "" unless special is true (then their text). NULL for a bad id. */
const char *kiln_token_piece(const kiln_tokenizer *t, int32_t id, bool special, size_t *len);
/* The id of the token whose vocabulary text is exactly text[0..len), or -1. */
int32_t kiln_token_find(const kiln_tokenizer *t, const char *text, size_t len);
int32_t kiln_tokenizer_n_vocab(const kiln_tokenizer *t);
int32_t kiln_token_bos(const kiln_tokenizer *t); /* -1 when absent */
int32_t kiln_token_eos(const kiln_tokenizer *t);
int32_t kiln_token_eot(const kiln_tokenizer *t); /* end of turn, e.g. <|im_end|>, <|eot_id|> */
/* Whether generation stops at id: EOS, EOT, EOM and the end-of-text tokens of the vocabulary. */
bool kiln_token_is_eog(const kiln_tokenizer *t, int32_t id);
/* Whether the model wants a BOS token first (tokenizer.ggml.add_bos_token, else its default). */
bool kiln_tokenizer_add_bos(const kiln_tokenizer *t);
/* Streaming detokenizer: token ids in, complete UTF-8 out. Text is held back until a character
 * is complete; bytes that cannot start or continue a character become U+FFFD. special: render
 * control tokens as their text. A SentencePiece model's first leading space is dropped. */
typedef struct kiln_detok kiln_detok;
kiln_detok *kiln_detok_new(const kiln_tokenizer *t, bool special);
/* Adds token id (or nothing when id is -1) and writes at most cap bytes of complete characters
 * to out; what does not fit waits for the next call. Returns bytes written, < 0 for a bad id. */
int64_t kiln_detok_push(kiln_detok *d, int32_t id, char *out, size_t cap);
/* End of stream: writes what is waiting (an incomplete tail as U+FFFD) up to cap bytes and
 * returns the count; call until it returns 0. The detokenizer may then be reused. */
int64_t kiln_detok_flush(kiln_detok *d, char *out, size_t cap);
void kiln_detok_free(kiln_detok *d);

/* ---- sampling and chat templates --------------------------------------------------------------
 */
/* A sampler picks the next token from a float logits array (host memory, n_vocab entries).
 * Order: penalties (over the last repeat_last_n tokens seen) -> temperature 0: argmax (ties go
 * to the lowest id) | else top-k -> softmax(logits / temperature) -> top-p -> min-p -> a draw
 * from the sampler's own PRNG (the same seed gives the same tokens on every machine).
 * Penalties, for each token with count c > 0 in the window: repeat_penalty divides a positive
 * logit and multiplies a negative one; then c * frequency_penalty + presence_penalty is
 * subtracted. A NaN logit is an error; -inf never wins; +inf tokens share all probability. */
typedef struct {
  double temperature;    /* >= 0; 0 = greedy */
  int top_k;             /* >= 0; 0 = all tokens */
  double top_p;          /* (0, 1]: keep the smallest top set whose probability is >= top_p */
  double min_p;          /* [0, 1]: drop tokens with p < min_p * p_max */
  double repeat_penalty; /* > 0; 1 = off */
  int repeat_last_n;     /* >= 0: the penalty window; 0 = penalties off */
  double frequency_penalty;
  double presence_penalty;
  uint64_t seed;
} kiln_sampler_params;
typedef struct kiln_sampler kiln_sampler;
/* temperature 0.8, top_k 40, top_p 0.95, min_p 0.05, repeat 1.0, last_n 64, freq/presence 0,
 * seed 0. */
void kiln_sampler_defaults(kiln_sampler_params *p);
/* NULL and an error naming the field when a parameter is out of range. Free with _free. */
kiln_sampler *kiln_sampler_new(const kiln_sampler_params *p);
/* The chosen token id (also added to the penalty history), or < 0 and an error for NULL
 * arguments, n_vocab < 1 or > INT32_MAX, a NaN logit, or no token with a logit above -inf. */
int32_t kiln_sample(kiln_sampler *s, const float *logits, int64_t n_vocab);
/* Adds a token the sampler did not choose (a prompt or forced token) to the penalty history. */
void kiln_sampler_accept(kiln_sampler *s, int32_t id);
/* Forgets the history and restarts the random stream from the seed. */
void kiln_sampler_reset(kiln_sampler *s);
void kiln_sampler_free(kiln_sampler *s);

/* Chat templates. A model's own template (its GGUF tokenizer.chat_template, Jinja) is
 * interpreted; kiln's built-ins, by name ("chatml", "smollm2", "llama3", "llama2", "zephyr",
 * "gemma"), are Jinja texts too: --chat-template overrides and the fallback (ChatML) for a file
 * without a template. A whole conversation is rendered at once; message contents are data:
 * tokenizing a rendering turns only the template's own text into control tokens (a message
 * containing "<|im_start|>system" is those characters as text). */
typedef struct kiln_chat kiln_chat;
typedef struct {
  const char *role;    /* "system", "user", "assistant", ... as the template expects */
  const char *content; /* UTF-8 text */
} kiln_chat_msg;
/* name NULL: the template text jinja (a file's own; NULL or "" for none: ChatML), else the
 * built-in of that name. bos_token and eos_token are the tokenizer's texts (tok may be NULL:
 * none). The template is tried on a one-message conversation. NULL and an error (the
 * template's line:column and construct, or the known names) on failure; free with _free. */
kiln_chat *kiln_chat_open(const char *jinja, const kiln_tokenizer *tok, const char *name);
void kiln_chat_free(kiln_chat *c);
/* The built-in's name, or "the model's own" for a file's template. */
const char *kiln_chat_name(const kiln_chat *c);
/* Whether name is a built-in; false and an error listing them otherwise. */
bool kiln_chat_builtin(const char *name);
/* The conversation rendered (malloc'ed, the caller frees); add_generation_prompt appends the
 * assistant's turn header. NULL and an error (a template's raise_exception message, say). */
char *kiln_chat_render(const kiln_chat *c, const kiln_chat_msg *msgs, int n,
                       bool add_generation_prompt);
/* The rendering tokenized with the template's markers as control tokens and the contents as
 * text; the tokenizer's BOS first when it adds one and the rendering does not start with it.
 * *ids: malloc'ed, the caller frees. The token count, or < 0 and an error. */
int64_t kiln_chat_tokenize(const kiln_chat *c, const kiln_tokenizer *tok, const kiln_chat_msg *msgs,
                           int n, bool add_generation_prompt, int32_t **ids);

/* ---- language models (LLaMA family: llama, qwen2) --------------------------------------------
 * kiln_llm_load maps a GGUF model (weights stay in the file's mapping, quantized) and allocates
 * a KV cache for n_ctx tokens (0: the model's training context). kiln_llm_eval runs n tokens
 * after those already cached and writes the logits of the last one (all = false: n_vocab
 * floats) or of every one (n * n_vocab); the tokens join the cache. A full context is an error. */
typedef struct kiln_llm kiln_llm;
/* Whether kiln runs GGUF files of this general.architecture ("llama", "qwen2"). */
bool kiln_llm_arch_supported(const char *arch);
kiln_llm *kiln_llm_load(const char *path, int64_t n_ctx);
void kiln_llm_free(kiln_llm *m);
int kiln_llm_eval(kiln_llm *m, const int32_t *tokens, int64_t n, float *logits, bool all);
int64_t kiln_llm_n_vocab(const kiln_llm *m);
int64_t kiln_llm_n_ctx(const kiln_llm *m);
int64_t kiln_llm_pos(const kiln_llm *m);           /* tokens in the cache */
int kiln_llm_rewind(kiln_llm *m, int64_t pos);     /* forget cached tokens after pos */
const kiln_gguf *kiln_llm_gguf(const kiln_llm *m); /* metadata (NULL for a random model) */
/* Several sequences (conversations) over one copy of the weights: each of n_seq (1-256) has
 * its own KV cache of n_ctx tokens. The calls above act on sequence 0; these on any. */
kiln_llm *kiln_llm_load_seqs(const char *path, int64_t n_ctx, int n_seq);
int kiln_llm_n_seq(const kiln_llm *m);
int64_t kiln_llm_seq_pos(const kiln_llm *m, int seq); /* -1 and an error for a bad seq */
int kiln_llm_seq_rewind(kiln_llm *m, int seq, int64_t pos);
int kiln_llm_seq_eval(kiln_llm *m, int seq, const int32_t *tokens, int64_t n, float *logits,
                      bool all);
/* One new token for each of n distinct sequences, in one step that reads the weights once:
 * tokens[i] joins sequence seqs[i], whose next-token logits go to logits + i * n_vocab. The
 * step always computes n_seq rows (the rest are padding), so a sequence's tokens are the same
 * whether it decodes alone or beside others. < 0 and an error for a bad or full sequence. */
int kiln_llm_decode(kiln_llm *m, int n, const int *seqs, const int32_t *tokens, float *logits);
/* A LLaMA-shaped model with random weights, for benchmarks without a file: built on the
 * current device with weights of ggml type 1 (F16) or 2 (Q4_0) stored as a file would store
 * them, no biases, no tokenizer. kiln_llm_preset fills the shape of "llama-7b", "llama-13b",
 * "llama-70b" or "tiny" (< 0 and an error for another name). */
typedef struct {
  int64_t n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train;
} kiln_llm_shape;
int kiln_llm_preset(const char *name, kiln_llm_shape *s);
kiln_llm *kiln_llm_random(const kiln_llm_shape *s, int type, uint64_t seed, int64_t n_ctx);
/* Bytes of weights a random model's forward reads (0 for a loaded file). */
double kiln_llm_weight_bytes(const kiln_llm *m);
/* A fetched model (scripts/fetch-model): the first .gguf whose name contains name_part in
 * $KILN_CACHE/models, then ~/.cache/kiln/models; its path in buf, or NULL. */
const char *kiln_model_find(const char *name_part, char *buf, size_t n);

/* ---- serving ------------------------------------------------------------------------------
 * kiln_serve runs an OpenAI-compatible HTTP server over one GGUF model (POST
 * /v1/chat/completions and /v1/completions, GET /v1/models and /health, a chat page at /) until
 * kiln_serve_stop is called. One server per process; fill the options with kiln_serve_defaults.
 * Returns 0 after a clean stop, or < 0 and an error when it cannot start (model, address). */
typedef struct {
  const char *model;            /* GGUF file (required) */
  const char *host;             /* address to bind: "127.0.0.1" by default */
  int port;                     /* 8080 by default; 0: any free port (see on_listen) */
  int parallel;                 /* conversations served at once, each with its own cache: 4 */
  int64_t n_ctx;                /* tokens per conversation; 0: 4096, at most the model's */
  const char *api_key;          /* non-NULL: /v1/ wants "Authorization: Bearer KEY" */
  const char *chat_template;    /* a built-in's name (kiln_chat_builtin); NULL: the model's own */
  int timeout_s;                /* an idle or slow connection is dropped after this: 30 */
  kiln_sampler_params sampling; /* what a request does not set; the seed is drawn per request */
  void (*on_listen)(const char *url, void *arg); /* called once serving, with the real port */
  void *on_listen_arg;
} kiln_serve_opts;
void kiln_serve_defaults(kiln_serve_opts *o);
int kiln_serve(const kiln_serve_opts *o);
/* Makes a running kiln_serve cancel its requests, stop and return; async-signal-safe (call it
 * from a SIGINT handler). Before kiln_serve starts, it makes the next one return at once. */
void kiln_serve_stop(void);

/* ---- running ----------------------------------------------------------------------------- */
int kiln_realize(kiln_tensor *t);
int kiln_realize_many(int n, kiln_tensor *const *ts); /* one schedule for all */
/* Realizes t and copies its contiguous data out; nbytes must equal numel*dtype_size. */
int kiln_to_host(kiln_tensor *t, void *dst, size_t nbytes);
/* Waits until every kernel launched so far, on every device, has finished. Launches may run
 * asynchronously (CL, CUDA); host reads (kiln_to_host, kiln_item) wait by themselves, so this
 * is for timing. */
void kiln_synchronize(void);
/* Realizes t and reads element 0 of t (usually a 0-d tensor) as a double. */
double kiln_item(kiln_tensor *t);

/* Replay: between kiln_capture_begin and kiln_capture_end every kernel launch of the realizes
 * is recorded with its buffers; kiln_capture_replay runs them again, skipping graph building,
 * scheduling and compiling. Change inputs between replays by writing stored tensors in place
 * (kiln_write_rows); results appear in the tensors realized during the capture. Buffers used
 * by a capture live until kiln_capture_free. Captures do not nest. */
typedef struct kiln_capture kiln_capture;
int kiln_capture_begin(void);
kiln_capture *kiln_capture_end(void);
int kiln_capture_replay(const kiln_capture *c);
int kiln_capture_launches(const kiln_capture *c);
void kiln_capture_free(kiln_capture *c);

/* ---- statistics (for tests, DEBUG output and benchmarks) --------------------------------- */
typedef struct {
  int64_t kernels_run;      /* kernel launches */
  int64_t kernels_compiled; /* compiler invocations (disk cache misses) */
  int64_t kernels_searched; /* kernels whose optimizations were searched (timed candidates) */
  int64_t schedules;        /* realize calls that ran at least one kernel */
  int64_t bytes_allocated;  /* device bytes live now */
  int64_t nodes_live;       /* graph nodes alive now */
  int64_t tensors_live;     /* tensor handles alive now */
} kiln_stats;
void kiln_get_stats(kiln_stats *s);
/* Frees cached programs and pooled memory (tests use it to see a cold start). */
void kiln_reset_caches(void);
/* Returns the memory kept for reuse by later kernel outputs to the system: after a pass that
 * will not come back soon (an evaluation between training epochs), so its sizes do not stay
 * resident beside the next pass's until they age out. */
void kiln_release_memory(void);

#ifdef __cplusplus
}
#endif
#endif
