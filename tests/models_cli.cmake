# `kiln model` through the CLI: help, reproducible bytes, atomic write, errors, --init-from;
# `kiln bench`'s per-node table and JSON on the built model
# (tests/models_cli.sh).  The builder itself is tested by test_models.c.
if(TARGET kiln_cli)
  add_test(NAME models_cli
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/models_cli.sh $<TARGET_FILE:kiln_cli>
                   ${CMAKE_CURRENT_BINARY_DIR}/models_cli ${CMAKE_CURRENT_SOURCE_DIR}/data)
endif()
