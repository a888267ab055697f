// The CPU kernels of every power_bert op, registered in one place.
#include <torch/library.h>

#include "cpu_kernels.h"

TORCH_LIBRARY_IMPL(power_bert, CPU, m) {
  m.impl("significance", &power_bert::cpu::significance);
  m.impl("extract", &power_bert::cpu::extract);
  m.impl("extract_scored", &power_bert::cpu::extract_scored);
  m.impl("extract_backward", &power_bert::cpu::extract_backward);
  m.impl("soft_extract", &power_bert::cpu::soft_extract);
  m.impl("soft_extract_backward", &power_bert::cpu::soft_extract_backward);
  m.impl("_attention_forward", &power_bert::cpu::attention_forward);
  m.impl("_attention_backward", &power_bert::cpu::attention_backward);
}
