/* image.c — PNG (libpng) and JPEG (libjpeg-turbo) decoding with setjmp-safe error
 * handling, atomic PNG/JPEG writing, antialiased bilinear resize, normalization. */
#include "data/image.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>

const float kiln_imagenet_mean[3] = {0.485f, 0.456f, 0.406f};
const float kiln_imagenet_std[3] = {0.229f, 0.224f, 0.225f};

kiln_image_format kiln_image_sniff(const unsigned char *head, size_t n) {
  static const unsigned char png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n >= 8 && !memcmp(head, png_sig, 8)) return KILN_IMG_PNG;
  if (n >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff) return KILN_IMG_JPEG;
  return KILN_IMG_UNKNOWN;
}

kiln_code kiln_image_alloc(kiln_image *im, int w, int h, int c, kiln_err *e) {
  memset(im, 0, sizeof *im);
  int64_t n = (int64_t)w * h * c;
  if (w <= 0 || h <= 0 || c <= 0 || n > KILN_IMAGE_MAX_PIXELS * 4)
    return kiln_errf(e, KILN_ERR_LIMIT, "image of %dx%dx%d is out of range", w, h, c);
  im->px = kiln_malloc(sizeof(float) * (size_t)n);
  if (!im->px) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory for a %dx%d image", w, h);
  im->w = w;
  im->h = h;
  im->c = c;
  return KILN_OK;
}

void kiln_image_release(kiln_image *im) {
  if (!im) return;
  kiln_free(im->px);
  memset(im, 0, sizeof *im);
}

static kiln_code check_size(const char *path, int64_t w, int64_t h, kiln_err *e) {
  if (w <= 0 || h <= 0) return kiln_errf(e, KILN_ERR_PARSE, "%s: image has an empty size (%lldx%lld)", path,
                                         (long long)w, (long long)h);
  if (w > KILN_IMAGE_MAX_SIDE || h > KILN_IMAGE_MAX_SIDE || w * h > KILN_IMAGE_MAX_PIXELS)
    return kiln_errf(e, KILN_ERR_LIMIT, "%s: image of %lldx%lld exceeds the limit (%d per side, %lld megapixels)",
                     path, (long long)w, (long long)h, KILN_IMAGE_MAX_SIDE,
                     (long long)(KILN_IMAGE_MAX_PIXELS >> 20));
  return KILN_OK;
}

/* Interleaved samples (8- or 16-bit) of `sc` channels to planar float of `im->c` channels. */
static void to_planar(const void *buf, size_t rowbytes, int bits, int sc, kiln_image *im) {
  int w = im->w, h = im->h, dc = im->c;
  int64_t hw = (int64_t)w * h;
  float lut[256];
  for (int i = 0; i < 256; i++) lut[i] = (float)i / 255.0f;
  for (int y = 0; y < h; y++) {
    const uint8_t *r8 = (const uint8_t *)buf + (size_t)y * rowbytes;
    const uint16_t *r16 = (const uint16_t *)r8;
    for (int x = 0; x < w; x++) {
      float v[3];
      for (int k = 0; k < sc; k++)
        v[k] = bits == 16 ? (float)r16[x * sc + k] / 65535.0f : lut[r8[x * sc + k]];
      float *p = im->px + (int64_t)y * w + x;
      if (dc == sc) {
        for (int k = 0; k < sc; k++) p[k * hw] = v[k];
      } else if (dc == 3) { /* gray -> RGB */
        p[0] = p[hw] = p[2 * hw] = v[0];
      } else { /* RGB -> one channel: the maximum */
        float m = v[0] > v[1] ? v[0] : v[1];
        p[0] = m > v[2] ? m : v[2];
      }
    }
  }
}

/* ---- PNG ---- */

typedef struct png_ctx {
  png_structp png;
  png_infop info;
  uint8_t *buf;
  png_bytep *rows;
  char msg[200];
} png_ctx;

static void png_error_fn(png_structp png, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(png);
  snprintf(c->msg, sizeof c->msg, "%s", msg);
  png_longjmp(png, 1);
}

static void png_warning_fn(png_structp png, png_const_charp msg) { (void)png, (void)msg; }

/* The setjmp lives here and only here: everything reachable after a longjmp is
 * held by `c` (not modified after setjmp), so the cleanup below frees it all. */
static kiln_code png_decode(const char *path, FILE *f, int channels, bool header_only, kiln_image *out, int *ow,
                            int *oh, kiln_err *e) {
  png_ctx *c = kiln_calloc(1, sizeof *c);
  if (!c) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  c->png = png_create_read_struct(PNG_LIBPNG_VER_STRING, c, png_error_fn, png_warning_fn);
  if (c->png) c->info = png_create_info_struct(c->png);
  if (!c->png || !c->info) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "%s: cannot create a PNG decoder", path);
    goto done;
  }
  if (setjmp(png_jmpbuf(c->png))) {
    bool trunc = strstr(c->msg, "Read Error") || strstr(c->msg, "Not enough") || strstr(c->msg, "too short");
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: %s PNG (libpng: %s)", path, trunc ? "truncated" : "corrupt", c->msg);
    goto done;
  }
  png_init_io(c->png, f);
  png_read_info(c->png, c->info);
  png_uint_32 w = png_get_image_width(c->png, c->info), h = png_get_image_height(c->png, c->info);
  if ((rc = check_size(path, w, h, e))) goto done;
  *ow = (int)w;
  *oh = (int)h;
  if (header_only) goto done;
  int color = png_get_color_type(c->png, c->info), bits = png_get_bit_depth(c->png, c->info);
  png_set_expand(c->png); /* palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha */
  if ((color & PNG_COLOR_MASK_ALPHA) || png_get_valid(c->png, c->info, PNG_INFO_tRNS)) png_set_strip_alpha(c->png);
  if (bits == 16) {
    uint16_t probe = 1;
    if (*(uint8_t *)&probe) png_set_swap(c->png); /* PNG is big-endian */
  }
  png_set_interlace_handling(c->png);
  png_read_update_info(c->png, c->info);
  int sc = png_get_channels(c->png, c->info);
  int sbits = png_get_bit_depth(c->png, c->info);
  if ((sc != 1 && sc != 3) || (sbits != 8 && sbits != 16)) {
    rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s: unsupported PNG layout (%d channels of %d bits after expansion)",
                   path, sc, sbits);
    goto done;
  }
  size_t rowbytes = png_get_rowbytes(c->png, c->info);
  c->buf = kiln_malloc(rowbytes * h);
  c->rows = kiln_malloc(sizeof(png_bytep) * h);
  if (!c->buf || !c->rows) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "%s: out of memory for a %ux%u image", path, (unsigned)w, (unsigned)h);
    goto done;
  }
  for (png_uint_32 y = 0; y < h; y++) c->rows[y] = c->buf + y * rowbytes;
  png_read_image(c->png, c->rows);
  png_read_end(c->png, NULL);
  if ((rc = kiln_image_alloc(out, (int)w, (int)h, channels ? channels : sc, e))) goto done;
  to_planar(c->buf, rowbytes, sbits, sc, out);
done:
  png_destroy_read_struct(c->png ? &c->png : NULL, c->info ? &c->info : NULL, NULL);
  kiln_free(c->buf);
  kiln_free(c->rows);
  kiln_free(c);
  return rc;
}

/* ---- JPEG ---- */

/* Where libjpeg's error_exit jumps to (cinfo.client_data points at it). */
typedef struct jpeg_jmp {
  jmp_buf jb;
  char msg[JMSG_LENGTH_MAX];
} jpeg_jmp;

typedef struct jpeg_ctx {
  struct jpeg_decompress_struct cinfo;
  struct jpeg_error_mgr jerr;
  jpeg_jmp j;
  bool created;
  uint8_t *buf;
} jpeg_ctx;

static void jpeg_exit_fn(j_common_ptr ci) {
  jpeg_jmp *j = ci->client_data;
  ci->err->format_message(ci, j->msg);
  longjmp(j->jb, 1);
}

/* Warnings that mean the pixels are wrong (libjpeg would fill the rest with gray)
 * are errors here; harmless ones (extraneous bytes, ...) are ignored. */
static void jpeg_emit_fn(j_common_ptr ci, int level) {
  if (level >= 0) return;
  int code = ci->err->msg_code;
  if (code == JWRN_JPEG_EOF || code == JWRN_HIT_MARKER || code == JWRN_MUST_RESYNC || code == JWRN_NOT_SEQUENTIAL)
    jpeg_exit_fn(ci);
}

static kiln_code jpeg_decode(const char *path, FILE *f, int channels, bool header_only, kiln_image *out, int *ow,
                             int *oh, kiln_err *e) {
  jpeg_ctx *c = kiln_calloc(1, sizeof *c);
  if (!c) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_code rc = KILN_OK;
  c->cinfo.err = jpeg_std_error(&c->jerr);
  c->jerr.error_exit = jpeg_exit_fn;
  c->jerr.emit_message = jpeg_emit_fn;
  c->cinfo.client_data = &c->j;
  if (setjmp(c->j.jb)) {
    bool trunc = c->jerr.msg_code == JWRN_JPEG_EOF || c->jerr.msg_code == JERR_INPUT_EOF ||
                 c->jerr.msg_code == JERR_INPUT_EMPTY;
    rc = kiln_errf(e, KILN_ERR_PARSE, "%s: %s JPEG (libjpeg: %s)", path, trunc ? "truncated" : "corrupt", c->j.msg);
    goto done;
  }
  jpeg_create_decompress(&c->cinfo);
  c->created = true;
  jpeg_stdio_src(&c->cinfo, f);
  jpeg_read_header(&c->cinfo, TRUE);
  if ((rc = check_size(path, c->cinfo.image_width, c->cinfo.image_height, e))) goto done;
  *ow = (int)c->cinfo.image_width;
  *oh = (int)c->cinfo.image_height;
  int comps = c->cinfo.num_components;
  if (c->cinfo.jpeg_color_space == JCS_CMYK || c->cinfo.jpeg_color_space == JCS_YCCK) {
    rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s: CMYK JPEG is not supported (convert it to RGB)", path);
    goto done;
  }
  if (comps != 1 && comps != 3) {
    rc = kiln_errf(e, KILN_ERR_UNSUPPORTED, "%s: JPEG with %d components is not supported", path, comps);
    goto done;
  }
  if (header_only) goto done;
  c->cinfo.out_color_space = comps == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&c->cinfo);
  int sc = c->cinfo.output_components, w = (int)c->cinfo.output_width, h = (int)c->cinfo.output_height;
  size_t rowbytes = (size_t)w * sc;
  c->buf = kiln_malloc(rowbytes * (size_t)h);
  if (!c->buf) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, w, h);
    goto done;
  }
  while (c->cinfo.output_scanline < c->cinfo.output_height) {
    JSAMPROW row = c->buf + rowbytes * c->cinfo.output_scanline;
    jpeg_read_scanlines(&c->cinfo, &row, 1);
  }
  jpeg_finish_decompress(&c->cinfo);
  if ((rc = kiln_image_alloc(out, w, h, channels ? channels : sc, e))) goto done;
  to_planar(c->buf, rowbytes, 8, sc, out);
done:
  if (c->created) jpeg_destroy_decompress(&c->cinfo);
  kiln_free(c->buf);
  kiln_free(c);
  return rc;
}

static kiln_code decode_file(const char *path, int channels, bool header_only, kiln_image *out, int *w, int *h,
                             kiln_err *e) {
  if (out) memset(out, 0, sizeof *out);
  FILE *f = fopen(path, "rb");
  if (!f) return kiln_errf(e, KILN_ERR_IO, "%s: cannot open (%s)", path, strerror(errno));
  unsigned char head[24];
  size_t n = fread(head, 1, sizeof head, f);
  kiln_image_format fmt = kiln_image_sniff(head, n);
  kiln_code rc;
  if (fmt == KILN_IMG_PNG && n == 24 && !memcmp(head + 12, "IHDR", 4)) {
    /* the size from IHDR, checked before libpng reads (or allocates) anything more */
    int64_t w0 = ((int64_t)head[16] << 24) | (head[17] << 16) | (head[18] << 8) | head[19];
    int64_t h0 = ((int64_t)head[20] << 24) | (head[21] << 16) | (head[22] << 8) | head[23];
    if ((rc = check_size(path, w0, h0, e))) {
      fclose(f);
      return rc;
    }
  }
  if (fmt == KILN_IMG_UNKNOWN) {
    rc = n == 0 ? kiln_errf(e, KILN_ERR_PARSE, "%s: empty file (expected a PNG or JPEG image)", path)
                : kiln_errf(e, KILN_ERR_PARSE, "%s: not a PNG or JPEG image", path);
  } else {
    rewind(f);
    rc = fmt == KILN_IMG_PNG ? png_decode(path, f, channels, header_only, out, w, h, e)
                             : jpeg_decode(path, f, channels, header_only, out, w, h, e);
  }
  fclose(f);
  return rc;
}

kiln_code kiln_image_info(const char *path, int *w, int *h, kiln_err *e) {
  return decode_file(path, 0, true, NULL, w, h, e);
}

kiln_code kiln_image_read(const char *path, int channels, kiln_image *out, kiln_err *e) {
  if (channels != 0 && channels != 1 && channels != 3)
    return kiln_errf(e, KILN_ERR_INVALID, "%s: cannot decode to %d channels", path, channels);
  int w, h;
  return decode_file(path, channels, false, out, &w, &h, e);
}

/* ---- writing ---- */

/* Opens "<path>.tmpXXXXXX" in the same folder, so the final rename is atomic. */
static kiln_code open_temp(const char *path, char **tmp, FILE **f, kiln_err *e) {
  size_t n = strlen(path) + 16;
  *tmp = kiln_malloc(n);
  if (!*tmp) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  snprintf(*tmp, n, "%s.tmpXXXXXX", path);
  int fd = mkstemp(*tmp);
  if (fd < 0) {
    kiln_code rc = kiln_errf(e, KILN_ERR_IO, "%s: cannot create a temporary file (%s)", path, strerror(errno));
    kiln_free(*tmp);
    *tmp = NULL;
    return rc;
  }
  fchmod(fd, 0644);
  *f = fdopen(fd, "wb");
  if (!*f) {
    close(fd);
    unlink(*tmp);
    kiln_free(*tmp);
    *tmp = NULL;
    return kiln_errf(e, KILN_ERR_IO, "%s: cannot open for writing", path);
  }
  return KILN_OK;
}

/* Closes the temporary file and renames it over `path` (or removes it on failure). */
static kiln_code finish_temp(const char *path, char *tmp, FILE *f, kiln_code rc, kiln_err *e) {
  if (fflush(f) != 0 && !rc) rc = kiln_errf(e, KILN_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
  if (fclose(f) != 0 && !rc) rc = kiln_errf(e, KILN_ERR_IO, "%s: write failed (%s)", path, strerror(errno));
  if (!rc && rename(tmp, path) != 0) rc = kiln_errf(e, KILN_ERR_IO, "%s: cannot rename into place (%s)", path,
                                                   strerror(errno));
  if (rc) unlink(tmp);
  kiln_free(tmp);
  return rc;
}

kiln_code kiln_png_write(const char *path, const uint8_t *pixels, int w, int h, int c, kiln_err *e) {
  if (w <= 0 || h <= 0 || (c != 1 && c != 3 && c != 4))
    return kiln_errf(e, KILN_ERR_INVALID, "%s: cannot write a %dx%dx%d PNG", path, w, h, c);
  char *tmp;
  FILE *f;
  KILN_TRY(open_temp(path, &tmp, &f, e));
  kiln_code rc = KILN_OK;
  png_ctx *c_ = kiln_calloc(1, sizeof *c_);
  if (!c_) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
    return finish_temp(path, tmp, f, rc, e);
  }
  c_->png = png_create_write_struct(PNG_LIBPNG_VER_STRING, c_, png_error_fn, png_warning_fn);
  if (c_->png) c_->info = png_create_info_struct(c_->png);
  if (!c_->png || !c_->info) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "%s: cannot create a PNG encoder", path);
    goto done;
  }
  if (setjmp(png_jmpbuf(c_->png))) {
    rc = kiln_errf(e, KILN_ERR_IO, "%s: PNG write failed (libpng: %s)", path, c_->msg);
    goto done;
  }
  png_init_io(c_->png, f);
  int type = c == 1 ? PNG_COLOR_TYPE_GRAY : c == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_RGBA;
  png_set_IHDR(c_->png, c_->info, (png_uint_32)w, (png_uint_32)h, 8, type, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_set_compression_level(c_->png, 6);
  png_write_info(c_->png, c_->info);
  for (int y = 0; y < h; y++) png_write_row(c_->png, (png_const_bytep)(pixels + (size_t)y * w * c));
  png_write_end(c_->png, NULL);
done:
  png_destroy_write_struct(c_->png ? &c_->png : NULL, c_->info ? &c_->info : NULL);
  kiln_free(c_);
  return finish_temp(path, tmp, f, rc, e);
}

kiln_code kiln_jpeg_write(const char *path, const uint8_t *pixels, int w, int h, int c, int quality, kiln_err *e) {
  if (w <= 0 || h <= 0 || (c != 1 && c != 3))
    return kiln_errf(e, KILN_ERR_INVALID, "%s: cannot write a %dx%dx%d JPEG", path, w, h, c);
  char *tmp;
  FILE *f;
  KILN_TRY(open_temp(path, &tmp, &f, e));
  kiln_code rc = KILN_OK;
  struct wj {
    struct jpeg_compress_struct cinfo;
    struct jpeg_error_mgr jerr;
    jpeg_jmp j;
    bool created;
  } *c_ = kiln_calloc(1, sizeof *c_);
  if (!c_) return finish_temp(path, tmp, f, kiln_errf(e, KILN_ERR_NOMEM, "out of memory"), e);
  c_->cinfo.err = jpeg_std_error(&c_->jerr);
  c_->jerr.error_exit = jpeg_exit_fn;
  c_->cinfo.client_data = &c_->j;
  if (setjmp(c_->j.jb)) {
    rc = kiln_errf(e, KILN_ERR_IO, "%s: JPEG write failed (libjpeg: %s)", path, c_->j.msg);
    goto done;
  }
  jpeg_create_compress(&c_->cinfo);
  c_->created = true;
  jpeg_stdio_dest(&c_->cinfo, f);
  c_->cinfo.image_width = (JDIMENSION)w;
  c_->cinfo.image_height = (JDIMENSION)h;
  c_->cinfo.input_components = c;
  c_->cinfo.in_color_space = c == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_set_defaults(&c_->cinfo);
  jpeg_set_quality(&c_->cinfo, quality < 1 ? 1 : quality > 100 ? 100 : quality, TRUE);
  jpeg_start_compress(&c_->cinfo, TRUE);
  while (c_->cinfo.next_scanline < c_->cinfo.image_height) {
    JSAMPROW row = (JSAMPROW)(pixels + (size_t)c_->cinfo.next_scanline * w * c);
    jpeg_write_scanlines(&c_->cinfo, &row, 1);
  }
  jpeg_finish_compress(&c_->cinfo);
done:
  if (c_->created) jpeg_destroy_compress(&c_->cinfo);
  kiln_free(c_);
  return finish_temp(path, tmp, f, rc, e);
}

void kiln_image_to_u8(const float *planar, int c, int w, int h, uint8_t *out) {
  int64_t hw = (int64_t)w * h;
  for (int64_t i = 0; i < hw; i++)
    for (int k = 0; k < c; k++) {
      float v = planar[k * hw + i] * 255.0f + 0.5f;
      out[i * c + k] = v <= 0 ? 0 : v >= 255 ? 255 : (uint8_t)v;
    }
}

kiln_code kiln_image_write_png(const char *path, const kiln_image *im, kiln_err *e) {
  uint8_t *buf = kiln_malloc((size_t)im->w * im->h * im->c);
  if (!buf) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory");
  kiln_image_to_u8(im->px, im->c, im->w, im->h, buf);
  kiln_code rc = kiln_png_write(path, buf, im->w, im->h, im->c, e);
  kiln_free(buf);
  return rc;
}

/* ---- resize ---- */

typedef struct axis_taps {
  int *lo, *n; /* first source index and tap count per output index */
  float *w;    /* taps weights per output index, `stride` apart */
  int stride;
} axis_taps;

static float triangle(double x) {
  x = fabs(x);
  return x < 1.0 ? (float)(1.0 - x) : 0.0f;
}

/* PIL's precompute_coeffs for the bilinear filter, restricted to [in0, in0+len). */
static kiln_code axis_weights(int in0, int len, int out, bool flip, axis_taps *a, kiln_err *e) {
  double scale = (double)len / out, fs = scale > 1.0 ? scale : 1.0, support = fs;
  a->stride = (int)ceil(support) * 2 + 1;
  a->lo = kiln_malloc(sizeof(int) * (size_t)out);
  a->n = kiln_malloc(sizeof(int) * (size_t)out);
  a->w = kiln_malloc(sizeof(float) * (size_t)out * a->stride);
  if (!a->lo || !a->n || !a->w) return kiln_errf(e, KILN_ERR_NOMEM, "out of memory for resize weights");
  for (int i = 0; i < out; i++) {
    int oi = flip ? out - 1 - i : i;
    double center = (oi + 0.5) * scale;
    int xmin = (int)floor(center - support + 0.5), xmax = (int)floor(center + support + 0.5);
    if (xmin < 0) xmin = 0;
    if (xmax > len) xmax = len;
    if (xmax - xmin > a->stride) xmax = xmin + a->stride;
    float *w = a->w + (size_t)i * a->stride;
    double total = 0;
    for (int x = xmin; x < xmax; x++) total += w[x - xmin] = triangle((x - center + 0.5) / fs);
    if (total <= 0) { /* cannot happen for a non-empty window; keep the nearest pixel */
      xmax = xmin + 1;
      w[0] = 1.0f;
      total = 1;
    }
    for (int x = 0; x < xmax - xmin; x++) w[x] = (float)(w[x] / total);
    a->lo[i] = in0 + xmin;
    a->n[i] = xmax - xmin;
  }
  return KILN_OK;
}

static void axis_free(axis_taps *a) {
  kiln_free(a->lo);
  kiln_free(a->n);
  kiln_free(a->w);
}

kiln_code kiln_image_resize(const kiln_image *src, int x0, int y0, int cw, int ch, bool flip, float *dst, int dw,
                            int dh, kiln_err *e) {
  if (cw <= 0 || ch <= 0 || x0 < 0 || y0 < 0 || x0 + cw > src->w || y0 + ch > src->h || dw <= 0 || dh <= 0)
    return kiln_errf(e, KILN_ERR_INVALID, "resize region %dx%d+%d+%d of a %dx%d image to %dx%d is invalid", cw, ch,
                     x0, y0, src->w, src->h, dw, dh);
  int64_t shw = (int64_t)src->w * src->h, dhw = (int64_t)dw * dh;
  if (!flip && x0 == 0 && y0 == 0 && cw == src->w && ch == src->h && dw == src->w && dh == src->h) {
    memcpy(dst, src->px, sizeof(float) * (size_t)(shw * src->c));
    return KILN_OK;
  }
  axis_taps ax = {0}, ay = {0};
  float *tmp = NULL;
  kiln_code rc;
  if ((rc = axis_weights(x0, cw, dw, flip, &ax, e)) || (rc = axis_weights(y0, ch, dh, false, &ay, e))) goto done;
  tmp = kiln_malloc(sizeof(float) * (size_t)ch * dw); /* rows y0..y0+ch of one channel, resized horizontally */
  if (!tmp) {
    rc = kiln_errf(e, KILN_ERR_NOMEM, "out of memory for resize");
    goto done;
  }
  for (int k = 0; k < src->c; k++) {
    const float *plane = src->px + k * shw;
    for (int y = 0; y < ch; y++) {
      const float *row = plane + (int64_t)(y0 + y) * src->w;
      float *t = tmp + (int64_t)y * dw;
      for (int i = 0; i < dw; i++) {
        const float *w = ax.w + (size_t)i * ax.stride, *s = row + ax.lo[i];
        float acc = 0;
        for (int j = 0; j < ax.n[i]; j++) acc += w[j] * s[j];
        t[i] = acc;
      }
    }
    float *out = dst + k * dhw;
    for (int i = 0; i < dh; i++) {
      const float *w = ay.w + (size_t)i * ay.stride;
      const float *base = tmp + (int64_t)(ay.lo[i] - y0) * dw;
      float *o = out + (int64_t)i * dw;
      for (int x = 0; x < dw; x++) o[x] = w[0] * base[x];
      for (int j = 1; j < ay.n[i]; j++) {
        const float *r = base + (int64_t)j * dw;
        for (int x = 0; x < dw; x++) o[x] += w[j] * r[x];
      }
    }
  }
done:
  axis_free(&ax);
  axis_free(&ay);
  kiln_free(tmp);
  return rc;
}

void kiln_image_normalize(float *p, int c, int64_t hw) {
  for (int k = 0; k < c; k++) {
    float m =
        c == 3 ? kiln_imagenet_mean[k] : (kiln_imagenet_mean[0] + kiln_imagenet_mean[1] + kiln_imagenet_mean[2]) / 3;
    float s = c == 3 ? kiln_imagenet_std[k] : (kiln_imagenet_std[0] + kiln_imagenet_std[1] + kiln_imagenet_std[2]) / 3;
    float *q = p + k * hw;
    for (int64_t i = 0; i < hw; i++) q[i] = (q[i] - m) / s;
  }
}

void kiln_image_denormalize(float *p, int c, int64_t hw) {
  for (int k = 0; k < c; k++) {
    float m =
        c == 3 ? kiln_imagenet_mean[k] : (kiln_imagenet_mean[0] + kiln_imagenet_mean[1] + kiln_imagenet_mean[2]) / 3;
    float s = c == 3 ? kiln_imagenet_std[k] : (kiln_imagenet_std[0] + kiln_imagenet_std[1] + kiln_imagenet_std[2]) / 3;
    float *q = p + k * hw;
    for (int64_t i = 0; i < hw; i++) q[i] = q[i] * s + m;
  }
}

void kiln_mask_threshold(float *m, int64_t n) {
  for (int64_t i = 0; i < n; i++) m[i] = m[i] >= 0.5f ? 1.0f : 0.0f;
}
