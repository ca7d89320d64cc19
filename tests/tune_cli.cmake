# `kiln tune` through the CLI on a narrow network: a short budgeted run saves a table in its own
# cache directory, which kiln run then uses; a corrupt table is ignored with a warning; --dry-run
# and errors (tests/tune_cli.sh).  The table and forced blocks are tested by test_tune.c.
if(TARGET kiln_cli)
  add_test(NAME tune_cli
           COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/tune_cli.sh $<TARGET_FILE:kiln_cli>
                   ${CMAKE_CURRENT_BINARY_DIR}/tune_cli)
  set_tests_properties(tune_cli PROPERTIES ENVIRONMENT "OMP_WAIT_POLICY=PASSIVE")
endif()
