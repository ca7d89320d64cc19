#!/usr/bin/python3
# make_corpus.py — regenerates fuzz/corpus/infer/: small conformance models whose
# shape-determining inputs (int64 data such as Reshape's shape, Pad's pads, Resize's
# sizes) are turned into initializers, so shape inference and constant folding see
# constants the fuzzer can mutate.  Developer tool only (needs python3-onnx); the
# committed corpus is what the fuzzers and CI use.
import os
import sys

import onnx
from onnx import numpy_helper

SUITE = "/usr/share/libonnx-testdata/data/node"
TESTS = """reshape_negative_dim reshape_zero_and_negative_dim reshape_allowzero_reordered
expand_dim_changed constantofshape_int_zeros constantofshape_float_ones
resize_upsample_sizes_nearest resize_upsample_scales_linear resize_downsample_scales_cubic
resize_tf_crop_and_resize constant_pad edge_pad reflect_pad slice slice_neg_steps
slice_negative_axes split_variable_parts_2d split_zero_size_splits squeeze unsqueeze_three_axes
reduce_sum_keepdims_example reduce_sum_empty_axes_input_noop_example gather_negative_indices
concat_3d_axis_negative_2 clip_splitbounds shape_start_1_end_negative_1 where_long_example
convtranspose_output_shape maxpool_with_argmax_2d_precomputed_pads dropout_default_mask_ratio
""".split()


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    for t in TESTS:
        d = os.path.join(SUITE, "test_" + t)
        m = onnx.load(os.path.join(d, "model.onnx"))
        keep = []
        for i, vi in enumerate(m.graph.input):
            pb = os.path.join(d, "test_data_set_0", "input_%d.pb" % i)
            elem = vi.type.tensor_type.elem_type
            if elem in (onnx.TensorProto.INT64, onnx.TensorProto.FLOAT) and os.path.exists(pb) and i > 0:
                tp = onnx.TensorProto()
                with open(pb, "rb") as f:
                    tp.ParseFromString(f.read())
                arr = numpy_helper.to_array(tp)
                m.graph.initializer.append(numpy_helper.from_array(arr, vi.name))
            else:
                keep.append(vi)
        del m.graph.input[:]
        m.graph.input.extend(keep)
        with open(os.path.join(out_dir, t + ".onnx"), "wb") as f:
            f.write(m.SerializeToString())


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "infer"))
