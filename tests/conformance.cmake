# The ONNX backend test suite (libonnx-testdata): every listed test must keep passing
# (tests/conformance/passing.txt), and no model of the suite may crash kiln.
set(KILN_SUITE_DIR /usr/share/libonnx-testdata/data)
if(EXISTS ${KILN_SUITE_DIR}/node AND TARGET kiln_cli)
  add_test(NAME conformance
           COMMAND kiln_cli conformance --scope ${CMAKE_CURRENT_SOURCE_DIR}/conformance/v1-scope.txt
                   --expect ${CMAKE_CURRENT_SOURCE_DIR}/conformance/passing.txt)
  set_tests_properties(conformance PROPERTIES TIMEOUT 1800)
endif()
