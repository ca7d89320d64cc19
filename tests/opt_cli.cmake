# `kiln opt` through the CLI: pipelines, --stats, --check on a kiln-built network and a
# PyTorch export, --bind, errors (tests/opt_cli.sh).  The passes are tested by test_passes.c.
if(TARGET kiln_cli)
  add_test(NAME opt_cli
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/opt_cli.sh $<TARGET_FILE:kiln_cli>
                   ${CMAKE_CURRENT_BINARY_DIR}/opt_cli ${CMAKE_CURRENT_SOURCE_DIR}/data)
endif()
