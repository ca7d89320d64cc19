/* proto_tensor.c — the bounded protobuf-c allocator and TensorProto <-> kiln_tensor. */
#include "frontend/proto_tensor.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- bounded allocator ----
 * Each block carries a 16-byte header with its size so frees can be counted
 * and the limit applies to live bytes. */
#define PB_HDR 16

static void *pb_alloc(void *data, size_t size) {
  kiln_pb_alloc *pa = data;
  if (size > pa->limit || pa->live > pa->limit - size) {
    pa->over = true;
    return NULL;
  }
  unsigned char *p = kiln_malloc(size + PB_HDR);
  if (!p) {
    pa->failed = true;
    return NULL;
  }
  memcpy(p, &size, sizeof size);
  pa->live += size;
  return p + PB_HDR;
}

static void pb_free(void *data, void *ptr) {
  kiln_pb_alloc *pa = data;
  if (!ptr) return;
  unsigned char *p = (unsigned char *)ptr - PB_HDR;
  size_t size;
  memcpy(&size, p, sizeof size);
  pa->live -= size;
  kiln_free(p);
}

void kiln_pb_alloc_init(kiln_pb_alloc *pa, size_t input_len) {
  memset(pa, 0, sizeof *pa);
  pa->base.alloc = pb_alloc;
  pa->base.free = pb_free;
  pa->base.allocator_data = pa;
  size_t lim = ((size_t)64 << 20);
  if (input_len < (SIZE_MAX - lim) / 8) lim += input_len * 8;
  else lim = SIZE_MAX / 2;
  pa->limit = lim;
}

kiln_code kiln_pb_unpack(const ProtobufCMessageDescriptor *desc, const void *buf, size_t len,
                         const char *label, const char *what, kiln_pb_alloc *pa,
                         ProtobufCMessage **out, kiln_err *e) {
  *out = protobuf_c_message_unpack(desc, &pa->base, len, buf);
  if (*out) return KILN_OK;
  if (pa->failed)
    return kiln_errf(e, KILN_ERR_NOMEM, "%s: out of memory while parsing the %s", label, what);
  if (pa->over)
    return kiln_errf(e, KILN_ERR_LIMIT,
                     "%s: parsing the %s needs more than %zu MiB of memory; refusing it", label,
                     what, pa->limit >> 20);
  return kiln_errf(e, KILN_ERR_PARSE, "%s: not a valid %s (malformed or truncated protobuf)", label,
                   what);
}

kiln_code kiln_pb_pack(const ProtobufCMessage *m, uint8_t **buf, size_t *len, kiln_err *e) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *p = kiln_malloc(n ? n : 1);
  *buf = NULL;
  *len = 0;
  if (!p) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory serializing %zu bytes", n);
  size_t w = protobuf_c_message_pack(m, p);
  if (w != n) {
    kiln_free(p);
    return kiln_errf(e, KILN_ERR_INTERNAL, "protobuf serialization wrote %zu of %zu bytes", w, n);
  }
  *buf = p;
  *len = n;
  return KILN_OK;
}

/* ---- external data ---- */

/* Strict non-negative decimal. */
static bool parse_u64(const char *s, int64_t *out) {
  if (!s || !*s) return false;
  int64_t v = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return false;
    if (v > (INT64_MAX - (*s - '0')) / 10) return false;
    v = v * 10 + (*s - '0');
  }
  *out = v;
  return true;
}

/* A location must stay inside the model's directory: relative, no ".."
 * component, and (after resolving symlinks) under base_dir. */
static kiln_code resolve_location(const char *base_dir, const char *loc, const char *what,
                                  char *full, size_t full_len, kiln_err *e) {
  if (!*loc) return kiln_errf(e, KILN_ERR_INVALID, "%s: external data has an empty location", what);
  if (loc[0] == '/')
    return kiln_errf(e, KILN_ERR_INVALID,
                     "%s: external data location '%s' is absolute; it must be relative to the model",
                     what, loc);
  for (const char *p = loc; *p;) {
    const char *q = strchr(p, '/');
    size_t n = q ? (size_t)(q - p) : strlen(p);
    if (n == 2 && p[0] == '.' && p[1] == '.')
      return kiln_errf(e, KILN_ERR_INVALID,
                       "%s: external data location '%s' leaves the model's directory", what, loc);
    p += n;
    while (*p == '/') p++;
  }
  if ((size_t)snprintf(full, full_len, "%s/%s", base_dir, loc) >= full_len)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s: external data path is too long", what);
  char rbase[PATH_MAX], rfull[PATH_MAX];
  if (!realpath(base_dir, rbase))
    return kiln_errf(e, KILN_ERR_IO, "%s: cannot resolve directory '%s': %s", what, base_dir,
                     strerror(errno));
  if (!realpath(full, rfull))
    return kiln_errf(e, KILN_ERR_IO, "%s: cannot open external data file '%s': %s", what, full,
                     strerror(errno));
  size_t bl = strlen(rbase);
  bool inside = strncmp(rfull, rbase, bl) == 0 && (rfull[bl] == '/' || (bl == 1 && rbase[0] == '/'));
  if (!inside)
    return kiln_errf(e, KILN_ERR_INVALID,
                     "%s: external data location '%s' resolves outside the model's directory", what,
                     loc);
  return KILN_OK;
}

static kiln_code read_external(const Onnx__TensorProto *tp, const char *base_dir, const char *what,
                               int64_t need, kiln_tensor **out, kiln_dtype dt,
                               const kiln_shape *shape, kiln_err *e) {
  if (!base_dir)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s: stored as external data, which needs the model's file path", what);
  const char *loc = NULL;
  int64_t offset = 0, length = -1;
  for (size_t i = 0; i < tp->n_external_data; i++) {
    const Onnx__StringStringEntryProto *kv = tp->external_data[i];
    const char *k = kv->key ? kv->key : "", *v = kv->value ? kv->value : "";
    if (strcmp(k, "location") == 0) {
      loc = v;
    } else if (strcmp(k, "offset") == 0) {
      if (!parse_u64(v, &offset))
        return kiln_errf(e, KILN_ERR_PARSE, "%s: external data offset '%s' is not a number", what, v);
    } else if (strcmp(k, "length") == 0) {
      if (!parse_u64(v, &length))
        return kiln_errf(e, KILN_ERR_PARSE, "%s: external data length '%s' is not a number", what, v);
    }
  }
  if (!loc) return kiln_errf(e, KILN_ERR_INVALID, "%s: external data has no location", what);
  if (length >= 0 && length != need)
    return kiln_errf(e, KILN_ERR_SHAPE,
                     "%s: external data length is %lld bytes; its dims need %lld", what,
                     (long long)length, (long long)need);
  char full[PATH_MAX];
  KILN_TRY(resolve_location(base_dir, loc, what, full, sizeof full, e));
  int fd = open(full, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return kiln_errf(e, KILN_ERR_IO, "%s: cannot open external data file '%s': %s", what, full,
                     strerror(errno));
  kiln_code rc = KILN_OK;
  struct stat st;
  int64_t end;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    rc = kiln_errf(e, KILN_ERR_IO, "%s: external data '%s' is not a regular file", what, full);
  } else if (!kiln_add_ok(offset, need, &end) || end > (int64_t)st.st_size) {
    rc = kiln_errf(e, KILN_ERR_SHAPE,
                   "%s: external data file '%s' has %lld bytes; offset %lld + %lld bytes does not fit",
                   what, full, (long long)st.st_size, (long long)offset, (long long)need);
  } else if (!(rc = kiln_tensor_new(dt, shape, out, e))) {
    char *dst = (*out)->data;
    int64_t done = 0;
    while (done < need) {
      ssize_t r = pread(fd, dst + done, (size_t)(need - done), (off_t)(offset + done));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) {
        rc = kiln_errf(e, KILN_ERR_IO, "%s: reading external data '%s' failed: %s", what, full,
                       r < 0 ? strerror(errno) : "unexpected end of file");
        kiln_tensor_free(*out);
        *out = NULL;
        break;
      }
      done += r;
    }
  }
  close(fd);
  return rc;
}

/* ---- TensorProto -> kiln_tensor ---- */

kiln_code kiln_proto_to_tensor(const Onnx__TensorProto *tp, const char *base_dir, const char *what,
                               kiln_tensor **out, kiln_err *e) {
  *out = NULL;
  int dt = tp->has_data_type ? tp->data_type : 0;
  if (dt == 0) return kiln_errf(e, KILN_ERR_INVALID, "%s has no data type", what);
  if (!kiln_dtype_supported(dt))
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s has dtype %s, which kiln does not support", what,
                     kiln_dtype_name(dt));
  if (tp->segment)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s is a segmented tensor, which kiln does not support",
                     what);
  if (tp->n_dims > KILN_MAX_RANK)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s has rank %zu; kiln supports at most %d", what,
                     tp->n_dims, KILN_MAX_RANK);
  kiln_shape shape = {.rank = (int)tp->n_dims};
  for (size_t i = 0; i < tp->n_dims; i++) {
    if (tp->dims[i] < 0)
      return kiln_errf(e, KILN_ERR_INVALID, "%s has a negative dimension (%lld)", what,
                       (long long)tp->dims[i]);
    shape.d[i] = tp->dims[i];
  }
  int64_t numel, need;
  size_t es = kiln_dtype_size((kiln_dtype)dt);
  if (!kiln_shape_numel(&shape, &numel) || !kiln_mul_ok(numel, (int64_t)es, &need) ||
      need > KILN_MAX_TENSOR_BYTES) {
    /* the dims may not fit a kiln_shape string; print them directly */
    char buf[256];
    size_t k = 0;
    buf[0] = 0;
    for (size_t i = 0; i < tp->n_dims && k < sizeof buf - 24; i++)
      k += (size_t)snprintf(buf + k, sizeof buf - k, i ? ",%lld" : "%lld", (long long)tp->dims[i]);
    return kiln_errf(e, KILN_ERR_LIMIT,
                     "%s has dims [%s] whose size overflows or exceeds kiln's limit of %lld bytes",
                     what, buf, (long long)KILN_MAX_TENSOR_BYTES);
  }
  kiln_dtype kdt = (kiln_dtype)dt;
  if (tp->has_data_location && tp->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return read_external(tp, base_dir, what, need, out, kdt, &shape, e);

  /* Check the amount of data before allocating anything of the declared size. */
  const void *src = NULL;
  size_t have;
  const char *field;
  if (tp->has_raw_data) {
    field = "bytes of raw_data";
    have = tp->raw_data.len;
    if ((int64_t)have != need)
      return kiln_errf(e, KILN_ERR_SHAPE, "%s has %zu %s; its dims and dtype need %lld", what, have,
                       field, (long long)need);
    src = tp->raw_data.data;
  } else {
    switch (kdt) {
    case KILN_F32: have = tp->n_float_data; field = "float_data values"; break;
    case KILN_I64: have = tp->n_int64_data; field = "int64_data values"; break;
    default: have = tp->n_int32_data; field = "int32_data values"; break;
    }
    if ((int64_t)have != numel)
      return kiln_errf(e, KILN_ERR_SHAPE, "%s has %zu %s; its dims need %lld", what, have, field,
                       (long long)numel);
  }
  kiln_tensor *t;
  if (kiln_tensor_new(kdt, &shape, &t, e)) {
    kiln_err_prefix(e, "%s", what);
    return e->code;
  }
  if (src) {
    if (need) memcpy(t->data, src, (size_t)need);
    if (kdt == KILN_BOOL) /* normalize so every bool byte is 0 or 1 */
      for (int64_t i = 0; i < numel; i++) ((uint8_t *)t->data)[i] = ((uint8_t *)t->data)[i] != 0;
  } else if (numel) {
    switch (kdt) {
    case KILN_F32: memcpy(t->data, tp->float_data, (size_t)need); break;
    case KILN_I64: memcpy(t->data, tp->int64_data, (size_t)need); break;
    case KILN_I32: memcpy(t->data, tp->int32_data, (size_t)need); break;
    case KILN_BOOL:
      for (int64_t i = 0; i < numel; i++) ((uint8_t *)t->data)[i] = tp->int32_data[i] != 0;
      break;
    default: break;
    }
  }
  *out = t;
  return KILN_OK;
}

/* ---- kiln_tensor -> TensorProto ---- */

void kiln_tensor_to_proto(const kiln_tensor *t, const char *name, kiln_pb_tensor *out) {
  Onnx__TensorProto init = ONNX__TENSOR_PROTO__INIT;
  out->tp = init;
  for (int i = 0; i < t->shape.rank; i++) out->dims[i] = t->shape.d[i];
  out->tp.n_dims = (size_t)t->shape.rank;
  out->tp.dims = out->dims;
  out->tp.has_data_type = 1;
  out->tp.data_type = (int32_t)t->dtype;
  out->tp.name = (char *)name;
  out->tp.has_raw_data = 1;
  out->tp.raw_data.len = kiln_tensor_nbytes(t);
  out->tp.raw_data.data = t->data;
}
