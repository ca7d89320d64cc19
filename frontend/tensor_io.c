/* tensor_io.c — file helpers (bounded reads, atomic writes) and tensor files:
 * ONNX TensorProto .pb and NumPy .npy. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "frontend/onnx.h"
#include "frontend/proto_tensor.h"

/* ---- files ---- */

kiln_code kiln_read_file(const char *path, int64_t max_bytes, uint8_t **buf, size_t *len,
                         kiln_err *e) {
  *buf = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return kiln_errf(e, KILN_ERR_IO, "cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  kiln_code rc = KILN_OK;
  if (fstat(fd, &st) != 0) {
    rc = kiln_errf(e, KILN_ERR_IO, "cannot stat '%s': %s", path, strerror(errno));
  } else if (!S_ISREG(st.st_mode)) {
    rc = kiln_errf(e, KILN_ERR_IO, "'%s' is not a regular file", path);
  } else if ((int64_t)st.st_size > max_bytes) {
    rc = kiln_errf(e, KILN_ERR_LIMIT, "'%s' is %lld bytes; the limit is %lld", path,
                   (long long)st.st_size, (long long)max_bytes);
  }
  if (rc) {
    close(fd);
    return rc;
  }
  size_t n = (size_t)st.st_size;
  uint8_t *p = kiln_malloc(n ? n : 1);
  if (!p) {
    close(fd);
    return kiln_errf(e, KILN_ERR_NOMEM, "out of memory reading '%s' (%zu bytes)", path, n);
  }
  size_t done = 0;
  while (done < n) {
    ssize_t r = read(fd, p + done, n - done);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      rc = kiln_errf(e, KILN_ERR_IO, "error reading '%s': %s", path, strerror(errno));
      break;
    }
    if (r == 0) break; /* the file shrank while we read it */
    done += (size_t)r;
  }
  close(fd);
  if (rc) {
    kiln_free(p);
    return rc;
  }
  *buf = p;
  *len = done;
  return KILN_OK;
}

typedef struct io_part {
  const void *p;
  size_t n;
} io_part;

/* Writes parts to `path.tmp.<pid>` in the same directory, fsyncs, renames over
 * `path`; on any failure the temporary file is removed and `path` untouched. */
static kiln_code write_atomic_parts(const char *path, const io_part *parts, int n_parts,
                                    kiln_err *e) {
  size_t pl = strlen(path);
  char *tmp = kiln_malloc(pl + 32);
  if (!tmp) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) {
    kiln_code rc = kiln_errf(e, KILN_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
    kiln_free(tmp);
    return rc;
  }
  kiln_code rc = KILN_OK;
  for (int i = 0; i < n_parts && !rc; i++) {
    const char *p = parts[i].p;
    size_t done = 0;
    while (done < parts[i].n) {
      ssize_t w = write(fd, p + done, parts[i].n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        rc = kiln_errf(e, KILN_ERR_IO, "error writing '%s': %s", tmp,
                       w < 0 ? strerror(errno) : "short write");
        break;
      }
      done += (size_t)w;
    }
  }
  if (!rc && fsync(fd) != 0)
    rc = kiln_errf(e, KILN_ERR_IO, "cannot sync '%s': %s", tmp, strerror(errno));
  if (close(fd) != 0 && !rc)
    rc = kiln_errf(e, KILN_ERR_IO, "error closing '%s': %s", tmp, strerror(errno));
  if (!rc && rename(tmp, path) != 0)
    rc = kiln_errf(e, KILN_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(errno));
  if (rc) {
    unlink(tmp);
  } else {
    /* make the rename itself durable; failure here does not lose data */
    char *dir = kiln_strdup(path);
    if (dir) {
      int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
      }
      kiln_free(dir);
    }
  }
  kiln_free(tmp);
  return rc;
}

kiln_code kiln_write_file_atomic(const char *path, const void *buf, size_t len, kiln_err *e) {
  io_part part = {buf, len};
  return write_atomic_parts(path, &part, 1, e);
}

/* ---- TensorProto .pb ---- */

kiln_code kiln_tensor_load_pb_buffer(const void *buf, size_t len, const char *label,
                                     kiln_tensor **out, char **name, kiln_err *e) {
  *out = NULL;
  if (name) *name = NULL;
  if (!label) label = "<buffer>";
  kiln_pb_alloc pa;
  kiln_pb_alloc_init(&pa, len);
  ProtobufCMessage *m;
  KILN_TRY(kiln_pb_unpack(&onnx__tensor_proto__descriptor, buf, len, label, "TensorProto", &pa, &m,
                          e));
  Onnx__TensorProto *tp = (Onnx__TensorProto *)m;
  char what[300];
  if (tp->name && *tp->name)
    snprintf(what, sizeof what, "%s: tensor '%s'", label, tp->name);
  else
    snprintf(what, sizeof what, "%s: tensor", label);
  kiln_code rc = kiln_proto_to_tensor(tp, NULL, what, out, e);
  if (!rc && name) {
    *name = kiln_strdup(tp->name ? tp->name : "");
    if (!*name) {
      rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
      kiln_tensor_free(*out);
      *out = NULL;
    }
  }
  protobuf_c_message_free_unpacked(m, &pa.base);
  return rc;
}

kiln_code kiln_tensor_load_pb(const char *path, kiln_tensor **out, char **name, kiln_err *e) {
  uint8_t *buf;
  size_t len;
  *out = NULL;
  if (name) *name = NULL;
  KILN_TRY(kiln_read_file(path, KILN_MAX_MODEL_BYTES, &buf, &len, e));
  kiln_code rc = kiln_tensor_load_pb_buffer(buf, len, path, out, name, e);
  kiln_free(buf);
  return rc;
}

kiln_code kiln_tensor_save_pb(const kiln_tensor *t, const char *name, const char *path,
                              kiln_err *e) {
  kiln_pb_tensor pt;
  kiln_tensor_to_proto(t, name && *name ? name : NULL, &pt);
  uint8_t *buf;
  size_t len;
  KILN_TRY(kiln_pb_pack(&pt.tp.base, &buf, &len, e));
  kiln_code rc = kiln_write_file_atomic(path, buf, len, e);
  kiln_free(buf);
  return rc;
}

/* ---- NumPy .npy ----
 * Layout: "\x93NUMPY", major, minor, header length (u16 for 1.x, u32 for 2.x/3.x),
 * then a Python dict literal such as
 *   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
 * padded with spaces and ended by '\n', then the raw C-order data. */

typedef struct npy_cursor {
  const char *p, *end;
} npy_cursor;

static void npy_ws(npy_cursor *c) {
  while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool npy_eat(npy_cursor *c, char ch) {
  npy_ws(c);
  if (c->p < c->end && *c->p == ch) {
    c->p++;
    return true;
  }
  return false;
}

/* A quoted Python string without escapes; copies at most cap-1 bytes. */
static bool npy_str(npy_cursor *c, char *out, size_t cap) {
  npy_ws(c);
  if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
  char q = *c->p++;
  size_t n = 0;
  while (c->p < c->end && *c->p != q) {
    if (*c->p == '\\' || n + 1 >= cap) return false;
    out[n++] = *c->p++;
  }
  if (c->p >= c->end) return false;
  c->p++;
  out[n] = 0;
  return true;
}

static bool npy_word(npy_cursor *c, const char *w) {
  npy_ws(c);
  size_t n = strlen(w);
  if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n) != 0) return false;
  c->p += n;
  return true;
}

static kiln_code npy_shape(npy_cursor *c, kiln_shape *s, const char *label, kiln_err *e) {
  s->rank = 0;
  if (!npy_eat(c, '('))
    return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header: 'shape' is not a tuple", label);
  for (;;) {
    if (npy_eat(c, ')')) return KILN_OK;
    npy_ws(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9')
      return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header: bad 'shape' tuple", label);
    int64_t v = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
      v = v * 10 + (*c->p++ - '0');
      if (v > KILN_MAX_DIM)
        return kiln_errf(e, KILN_ERR_LIMIT, "%s: npy shape has a dimension over %lld", label,
                         (long long)KILN_MAX_DIM);
    }
    if (s->rank >= KILN_MAX_RANK)
      return kiln_errf(e, KILN_ERR_LIMIT, "%s: npy array has rank over %d", label, KILN_MAX_RANK);
    s->d[s->rank++] = v;
    if (npy_eat(c, ')')) return KILN_OK;
    if (!npy_eat(c, ','))
      return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header: bad 'shape' tuple", label);
  }
}

kiln_code kiln_tensor_load_npy_buffer(const void *buf, size_t len, const char *label,
                                      kiln_tensor **out, kiln_err *e) {
  const uint8_t *b = buf;
  *out = NULL;
  if (!label) label = "<buffer>";
  if (len < 10 || memcmp(b, "\x93NUMPY", 6) != 0)
    return kiln_errf(e, KILN_ERR_PARSE, "%s: not a .npy file (bad magic)", label);
  int major = b[6];
  size_t hlen, hstart;
  if (major == 1) {
    hlen = (size_t)b[8] | (size_t)b[9] << 8;
    hstart = 10;
  } else if (major == 2 || major == 3) {
    if (len < 12) return kiln_errf(e, KILN_ERR_PARSE, "%s: truncated .npy header", label);
    hlen = (size_t)b[8] | (size_t)b[9] << 8 | (size_t)b[10] << 16 | (size_t)b[11] << 24;
    hstart = 12;
  } else {
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s: .npy format version %d.%d is not supported",
                     label, major, b[7]);
  }
  if (hlen > len - hstart)
    return kiln_errf(e, KILN_ERR_PARSE, "%s: truncated .npy header (%zu bytes declared)", label,
                     hlen);
  npy_cursor c = {(const char *)b + hstart, (const char *)b + hstart + hlen};
  char key[32], descr[32] = "";
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  kiln_shape shape = {0};
  if (!npy_eat(&c, '{')) return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header is not a dict", label);
  for (;;) {
    if (npy_eat(&c, '}')) break;
    if (!npy_str(&c, key, sizeof key) || !npy_eat(&c, ':'))
      return kiln_errf(e, KILN_ERR_PARSE, "%s: malformed npy header", label);
    if (strcmp(key, "descr") == 0 && !have_descr) {
      if (!npy_str(&c, descr, sizeof descr))
        return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header: 'descr' is not a string", label);
      have_descr = true;
    } else if (strcmp(key, "fortran_order") == 0 && !have_order) {
      if (npy_word(&c, "True"))
        fortran = true;
      else if (!npy_word(&c, "False"))
        return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header: bad 'fortran_order'", label);
      have_order = true;
    } else if (strcmp(key, "shape") == 0 && !have_shape) {
      KILN_TRY(npy_shape(&c, &shape, label, e));
      have_shape = true;
    } else {
      return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header has an unexpected or repeated key '%s'",
                       label, key);
    }
    if (npy_eat(&c, '}')) break;
    if (!npy_eat(&c, ','))
      return kiln_errf(e, KILN_ERR_PARSE, "%s: malformed npy header", label);
  }
  npy_ws(&c);
  if (c.p != c.end)
    return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header has trailing bytes after the dict", label);
  if (!have_descr || !have_order || !have_shape)
    return kiln_errf(e, KILN_ERR_PARSE, "%s: npy header lacks '%s'", label,
                     !have_descr ? "descr" : !have_order ? "fortran_order" : "shape");
  if (fortran)
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s: npy array is in Fortran order; kiln reads C order only", label);
  kiln_dtype dt;
  if (strcmp(descr, "<f4") == 0) dt = KILN_F32;
  else if (strcmp(descr, "<i4") == 0) dt = KILN_I32;
  else if (strcmp(descr, "<i8") == 0) dt = KILN_I64;
  else if (strcmp(descr, "|b1") == 0) dt = KILN_BOOL;
  else
    return kiln_errf(e, KILN_ERR_UNSUPPORTED,
                     "%s: npy dtype '%s' is not supported (kiln reads <f4 <i4 <i8 |b1)", label, descr);
  int64_t need;
  if (kiln_bytes_for(dt, &shape, &need, e)) {
    kiln_err_prefix(e, "%s", label);
    return e->code;
  }
  size_t data_off = hstart + hlen;
  if ((int64_t)(len - data_off) != need) {
    char sb[160];
    return kiln_errf(e, KILN_ERR_SHAPE, "%s: npy data is %zu bytes; shape %s of %s needs %lld",
                     label, len - data_off, kiln_shape_str(&shape, sb, sizeof sb),
                     kiln_dtype_name(dt), (long long)need);
  }
  kiln_tensor *t;
  if (kiln_tensor_new(dt, &shape, &t, e)) {
    kiln_err_prefix(e, "%s", label);
    return e->code;
  }
  if (need) memcpy(t->data, b + data_off, (size_t)need);
  if (dt == KILN_BOOL)
    for (int64_t i = 0; i < t->numel; i++) ((uint8_t *)t->data)[i] = ((uint8_t *)t->data)[i] != 0;
  *out = t;
  return KILN_OK;
}

kiln_code kiln_tensor_load_npy(const char *path, kiln_tensor **out, kiln_err *e) {
  uint8_t *buf;
  size_t len;
  *out = NULL;
  KILN_TRY(kiln_read_file(path, KILN_MAX_TENSOR_BYTES + 65536, &buf, &len, e));
  kiln_code rc = kiln_tensor_load_npy_buffer(buf, len, path, out, e);
  kiln_free(buf);
  return rc;
}

kiln_code kiln_tensor_save_npy(const kiln_tensor *t, const char *path, kiln_err *e) {
  const char *descr;
  switch (t->dtype) {
  case KILN_F32: descr = "<f4"; break;
  case KILN_I32: descr = "<i4"; break;
  case KILN_I64: descr = "<i8"; break;
  case KILN_BOOL: descr = "|b1"; break;
  default:
    return kiln_errf(e, KILN_ERR_UNSUPPORTED, "cannot write dtype %s as .npy",
                     kiln_dtype_name(t->dtype));
  }
  char shape[KILN_MAX_RANK * 24 + 8];
  size_t k = (size_t)snprintf(shape, sizeof shape, "(");
  for (int i = 0; i < t->shape.rank; i++)
    k += (size_t)snprintf(shape + k, sizeof shape - k, i ? ", %lld" : "%lld",
                          (long long)t->shape.d[i]);
  snprintf(shape + k, sizeof shape - k, t->shape.rank == 1 ? ",)" : ")");
  /* 10-byte preamble + dict, padded with spaces so the data starts 64-aligned */
  char hdr[512];
  int dl = snprintf(hdr + 10, sizeof hdr - 10,
                    "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
  size_t total = 10 + (size_t)dl + 1;
  size_t padded = (total + 63) & ~(size_t)63;
  memset(hdr + 10 + dl, ' ', padded - total);
  hdr[padded - 1] = '\n';
  memcpy(hdr, "\x93NUMPY\x01\x00", 8);
  size_t hlen = padded - 10;
  hdr[8] = (char)(hlen & 0xff);
  hdr[9] = (char)(hlen >> 8);
  io_part parts[2] = {{hdr, padded}, {t->data, kiln_tensor_nbytes(t)}};
  return write_atomic_parts(path, parts, 2, e);
}

kiln_code kiln_tensor_load_file(const char *path, kiln_tensor **out, kiln_err *e) {
  size_t n = strlen(path);
  if (n >= 4 && strcasecmp(path + n - 4, ".npy") == 0) return kiln_tensor_load_npy(path, out, e);
  return kiln_tensor_load_pb(path, out, NULL, e);
}
