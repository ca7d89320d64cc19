/* cmd_model.c — `kiln model`: build the study's network (ResNet F-Net + C-Net +
 * SPN) as an .onnx file, optionally starting from a torchvision ResNet's weights. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "frontend/onnx.h"
#include "models/models.h"
#include "tools/cli.h"

static void usage(FILE *f) {
  fprintf(f, "usage: kiln model --classes K [options] -o MODEL.onnx\n"
             "\n"
             "Builds the saliency-aware classifier as a standard ONNX model (opset 13):\n"
             "  F-Net  torchvision's ResNet trunk without its pooling and fc (feature map\n"
             "         512x7x7, or 2048x7x7 for resnet50, at 224x224);\n"
             "  C-Net  global average pool -> FC hidden -> ReLU -> FC K (output `logits`);\n"
             "  SPN    blocks of upsample -> conv 3x3 -> BN -> ReLU with channels halving,\n"
             "         then conv 1x1 -> 1 channel (output `saliency`, the size of the image).\n"
             "Input `image` [B,3,S,S].  Initializer names follow torchvision (conv1.weight,\n"
             "layer1.0.bn1.running_mean, ...); see docs/models.md.\n"
             "\n"
             "network:\n"
             "  --backbone NAME      resnet18 | resnet34 | resnet50 (default resnet18)\n"
             "  --classes K          number of classes (required)\n"
             "  --cnet-hidden H      C-Net hidden width (default 1024); 0: a single FC named\n"
             "                       fc, exactly torchvision's classifier head\n"
             "  --no-spn             no saliency net (the study's baseline)\n"
             "  --spn-blocks N       number of upsampling blocks, equal scales (default: as\n"
             "                       many x2 blocks as reach the image size, 5 at 224)\n"
             "  --spn-scales A,B,..  per-block scales, e.g. 2,2,2,4 (the study's 4 blocks);\n"
             "                       their product times the feature size must equal S\n"
             "  --spn-width-cap W    at most W channels in the first SPN block; later blocks\n"
             "                       keep halving (makes resnet50's SPN affordable)\n"
             "  --upsample MODE      nearest (default) | bilinear\n"
             "  --align-corners      bilinear with align_corners=True (default half-pixel)\n"
             "  --width W            channels of the stem and layer1 (default 64; stages\n"
             "                       double); small widths make narrow test variants\n"
             "\n"
             "input and weights:\n"
             "  --image-size S       input height and width (default 224)\n"
             "  --batch B|NAME       fixed batch size (default 1), or a name for a symbolic\n"
             "                       batch dimension bound later (kiln info --bind NAME=8)\n"
             "  --seed S             initialization seed (default 0); same options and\n"
             "                       seed give the same bytes\n"
             "  --init-from FILE     copy initializers by name and shape from an ONNX export\n"
             "                       of a torchvision ResNet (export with BatchNorm kept:\n"
             "                       training=TrainingMode.PRESERVE); prints what matched\n"
             "  -o, --output FILE    where to write the model (written atomically)\n"
             "  -q, --quiet          print nothing on success\n"
             "\n"
             "Initialization: conv weights Kaiming-normal (fan_out, ReLU gain) as torchvision\n"
             "does; Linear weights and the SPN's 1x1 head Kaiming-normal (fan_in, ReLU gain);\n"
             "biases 0; BatchNorm weight 1, bias 0, running mean 0, running var 1.\n"
             "\n"
             "examples:\n"
             "  kiln model --backbone resnet50 --classes 8 --spn-scales 2,2,2,4 -o ours.onnx\n"
             "  kiln model --backbone resnet18 --classes 8 --no-spn -o baseline.onnx\n"
             "  kiln model --classes 1000 --no-spn --cnet-hidden 0 -o torchvision18.onnx\n");
}

/* Parses a decimal integer in [lo, hi]; false on anything else. */
static bool parse_int(const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  if (*s == '-') return false;
  unsigned long long v = strtoull(s, &end, 0);
  if (errno || end == s || *end) return false;
  *out = v;
  return true;
}

static bool parse_scales(const char *s, kiln_model_opts *o) {
  char buf[256];
  if (strlen(s) >= sizeof buf) return false;
  strcpy(buf, s);
  o->n_spn_scales = 0;
  for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
    if (o->n_spn_scales >= KILN_SPN_MAX_BLOCKS) return false;
    if (!parse_int(tok, 1, 64, &o->spn_scales[o->n_spn_scales])) return false;
    o->n_spn_scales++;
  }
  return o->n_spn_scales > 0;
}

/* Prints a list of names, several to a line. */
static void print_names(const char *title, char **names, int n, bool one_per_line) {
  if (!n) return;
  printf("%s (%d):\n", title, n);
  int col = 0;
  for (int i = 0; i < n; i++) {
    int len = (int)strlen(names[i]);
    if (one_per_line || col + len + 2 > 96) {
      if (col) putchar('\n');
      col = 0;
    }
    col += printf("%s%s", col ? ", " : "  ", names[i]);
  }
  if (col) putchar('\n');
}

int cmd_model(int argc, char **argv) {
  kiln_model_opts o;
  kiln_model_defaults(&o);
  const char *out = NULL, *init_from = NULL, *val;
  bool bad = false, quiet = false, have_classes = false;
  int64_t iv;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (cli_is_help(a)) {
      usage(stdout);
      return 0;
    } else if (cli_opt(argc, argv, &i, "--backbone", &val, &bad)) {
      if (!bad && !kiln_backbone_parse(val, &o.backbone))
        return cli_usage_error("model", "unknown backbone '%s' (resnet18, resnet34, resnet50)",
                               val);
    } else if (cli_opt(argc, argv, &i, "--classes", &val, &bad)) {
      if (!bad && !parse_int(val, 1, 1000000, &o.classes))
        return cli_usage_error("model", "--classes wants a number 1..1000000, not '%s'", val);
      have_classes = true;
    } else if (cli_opt(argc, argv, &i, "--cnet-hidden", &val, &bad)) {
      if (!bad && !parse_int(val, 0, 1000000, &o.cnet_hidden))
        return cli_usage_error("model", "--cnet-hidden wants a number 0..1000000, not '%s'", val);
    } else if (!strcmp(a, "--no-spn")) {
      o.spn = false;
    } else if (cli_opt(argc, argv, &i, "--spn-blocks", &val, &bad)) {
      if (!bad && !parse_int(val, 0, KILN_SPN_MAX_BLOCKS, &iv))
        return cli_usage_error("model", "--spn-blocks wants a number 0..%d, not '%s'",
                               KILN_SPN_MAX_BLOCKS, val);
      o.spn_blocks = (int)iv;
    } else if (cli_opt(argc, argv, &i, "--spn-scales", &val, &bad)) {
      if (!bad && !parse_scales(val, &o))
        return cli_usage_error("model",
                               "--spn-scales wants up to %d integers 1..64 like 2,2,2,4, "
                               "not '%s'",
                               KILN_SPN_MAX_BLOCKS, val);
    } else if (cli_opt(argc, argv, &i, "--spn-width-cap", &val, &bad)) {
      if (!bad && !parse_int(val, 1, 1000000, &o.spn_width_cap))
        return cli_usage_error("model", "--spn-width-cap wants a positive number, not '%s'", val);
    } else if (cli_opt(argc, argv, &i, "--upsample", &val, &bad)) {
      if (bad) break;
      if (!strcmp(val, "nearest"))
        o.upsample = KILN_UPSAMPLE_NEAREST;
      else if (!strcmp(val, "bilinear"))
        o.upsample = KILN_UPSAMPLE_BILINEAR;
      else
        return cli_usage_error("model", "--upsample is nearest or bilinear, not '%s'", val);
    } else if (!strcmp(a, "--align-corners")) {
      o.align_corners = true;
    } else if (cli_opt(argc, argv, &i, "--width", &val, &bad)) {
      if (!bad && !parse_int(val, 1, 4096, &o.width))
        return cli_usage_error("model", "--width wants a number 1..4096, not '%s'", val);
    } else if (cli_opt(argc, argv, &i, "--image-size", &val, &bad)) {
      if (!bad && !parse_int(val, 1, 16384, &o.image_size))
        return cli_usage_error("model", "--image-size wants a number 1..16384, not '%s'", val);
    } else if (cli_opt(argc, argv, &i, "--batch", &val, &bad)) {
      if (bad) break;
      if (val[0] >= '0' && val[0] <= '9') {
        if (!parse_int(val, 1, 65536, &o.batch))
          return cli_usage_error("model", "--batch wants a size 1..65536 or a name, not '%s'", val);
        o.batch_sym[0] = 0;
      } else {
        if (strlen(val) >= sizeof o.batch_sym)
          return cli_usage_error("model", "--batch name '%s' is too long", val);
        strcpy(o.batch_sym, val);
      }
    } else if (cli_opt(argc, argv, &i, "--seed", &val, &bad)) {
      if (!bad && !parse_u64(val, &o.seed))
        return cli_usage_error("model", "--seed wants a non-negative integer, not '%s'", val);
    } else if (cli_opt(argc, argv, &i, "--init-from", &val, &bad)) {
      init_from = val;
    } else if (cli_opt(argc, argv, &i, "-o", &val, &bad) ||
               cli_opt(argc, argv, &i, "--output", &val, &bad)) {
      out = val;
    } else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) {
      quiet = true;
    } else {
      return cli_usage_error("model", "unknown argument '%s'", a);
    }
    if (bad) return 2;
  }
  if (bad) return 2;
  if (!have_classes) return cli_usage_error("model", "--classes K is required");
  if (!out) return cli_usage_error("model", "no output file given (-o MODEL.onnx)");

  kiln_err e = {0};
  kiln_model_plan plan;
  if (kiln_model_plan_make(&o, &plan, &e)) return cli_usage_error("model", "%s", e.msg);
  kiln_graph *g = NULL;
  if (kiln_model_build(&o, &g, &e)) return cli_fail(&e);

  if (init_from) {
    kiln_graph *src = NULL;
    kiln_init_report r;
    if (kiln_onnx_load(init_from, &src, &e)) {
      ir_graph_free(g);
      return cli_fail(&e);
    }
    kiln_code rc = kiln_model_init_from(g, src, &r, &e);
    ir_graph_free(src);
    if (rc) {
      ir_graph_free(g);
      return cli_fail(&e);
    }
    int64_t fnet_total = 0;
    for (int64_t v = 0; v < g->n_values; v++) {
      const kiln_value *tv = &g->values[v];
      if (tv->is_initializer && tv->data &&
          (!strncmp(tv->name, "conv1.", 6) || !strncmp(tv->name, "bn1.", 4) ||
           !strncmp(tv->name, "layer", 5)))
        fnet_total++;
    }
    printf("init-from %s: %d tensors matched (%lld values); %lld of %lld F-Net tensors not "
           "provided; %d in the source unused; %d with a different shape\n",
           init_from, r.n_matched, (long long)r.matched_elems, (long long)r.n_missing,
           (long long)fnet_total, r.n_unused, r.n_mismatched);
    print_names("matched", r.matched, r.n_matched, false);
    print_names("shape differs (kept kiln's initialization)", r.mismatched, r.n_mismatched, true);
    print_names("unused source tensors", r.unused, r.n_unused, false);
    print_names("F-Net tensors not in the source (kept kiln's initialization)", r.missing,
                r.n_missing, false);
    if (r.n_unused && r.n_matched < fnet_total / 2)
      printf("note: few names matched; a PyTorch export in eval mode folds BatchNorm into Conv "
             "and renames the weights (onnx::Conv_*); export with "
             "training=torch.onnx.TrainingMode.PRESERVE to keep torchvision's names\n");
    kiln_init_report_free(&r);
  }

  if (kiln_onnx_save(g, out, &e)) {
    ir_graph_free(g);
    return cli_fail(&e);
  }
  if (!quiet) {
    printf("wrote %s: %s", out, kiln_backbone_name(o.backbone));
    if (o.width != 64) printf(" (width %lld)", (long long)o.width);
    if (o.cnet_hidden)
      printf(" + C-Net(%lld -> %lld -> %lld)", (long long)plan.feat_channels,
             (long long)o.cnet_hidden, (long long)o.classes);
    else
      printf(" + fc(%lld -> %lld)", (long long)plan.feat_channels, (long long)o.classes);
    if (o.spn) {
      printf(" + SPN(%d blocks, %s%s, scales", plan.spn_blocks,
             o.upsample == KILN_UPSAMPLE_NEAREST ? "nearest" : "bilinear",
             o.align_corners ? " align_corners" : "");
      for (int i = 0; i < plan.spn_blocks; i++)
        printf("%s%lld", i ? "," : " ", (long long)plan.spn_scales[i]);
      printf("; channels %lld", (long long)plan.feat_channels);
      for (int i = 0; i < plan.spn_blocks; i++)
        printf("->%lld", (long long)plan.spn_channels[i]);
      printf("->1)");
    }
    char bs[80];
    if (o.batch_sym[0])
      snprintf(bs, sizeof bs, "%s", o.batch_sym);
    else
      snprintf(bs, sizeof bs, "%lld", (long long)o.batch);
    printf("\n  image [%s,3,%lld,%lld], feature map %lldx%lldx%lld, parameters %lld "
           "(F-Net %lld, C-Net %lld, SPN %lld)\n",
           bs, (long long)o.image_size, (long long)o.image_size, (long long)plan.feat_channels,
           (long long)plan.feat_size, (long long)plan.feat_size,
           (long long)kiln_model_param_count(g, NULL),
           (long long)kiln_model_param_count(g, "fnet/"),
           (long long)kiln_model_param_count(g, "cnet/"),
           (long long)kiln_model_param_count(g, "spn/"));
  }
  ir_graph_free(g);
  return 0;
}
