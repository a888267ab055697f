// The CPU kernels of every power_bert op, registered in one place.
#include <torch/library.h>

#include "../op_table.h"
#include "cpu_kernels.h"

TORCH_LIBRARY_IMPL(power_bert, CPU, m) {
  POWER_BERT_IMPL_SELECTION_OPS(m, power_bert::cpu);
  m.impl("_attention_forward", &power_bert::cpu::attention_forward);
  m.impl("_attention_backward", &power_bert::cpu::attention_backward);
}
