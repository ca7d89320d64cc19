# Parity with PyTorch on a full-size torchvision ResNet-18 exported at test time
# (skipped, exit 77, when python3-torch is missing).
if(TARGET kiln_cli AND EXISTS /usr/bin/python3)
  foreach(backend jit ref)
    add_test(NAME torch_resnet18_${backend}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/torch/resnet18_parity.py
                     $<TARGET_FILE:kiln_cli> ${CMAKE_BINARY_DIR}/torch-resnet18-${backend} --backend ${backend})
    set_tests_properties(torch_resnet18_${backend} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 900)
  endforeach()
endif()
# `kiln grad` against torch.autograd on a narrow ResNet-18 + C-Net + SPN (skipped, exit 77,
# without python3-torch).
if(TARGET kiln_cli AND EXISTS /usr/bin/python3)
  foreach(backend jit ref)
    add_test(NAME torch_grad_parity_${backend}
             COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/torch/grad_parity.py
                     $<TARGET_FILE:kiln_cli> ${CMAKE_BINARY_DIR}/torch-grad-${backend} --backend ${backend})
    set_tests_properties(torch_grad_parity_${backend} PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 600)
  endforeach()
endif()
