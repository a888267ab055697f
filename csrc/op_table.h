// The selection ops every backend implements, in one list: POWER_BERT_IMPL_SELECTION_OPS(m, ns)
// registers ns::significance ... ns::soft_extract_backward on the TORCH_LIBRARY_IMPL block `m`.
#pragma once

#define POWER_BERT_IMPL_SELECTION_OPS(m, ns)                        \
  do {                                                              \
    (m).impl("significance", &ns::significance);                    \
    (m).impl("extract", &ns::extract);                              \
    (m).impl("extract_scored", &ns::extract_scored);                \
    (m).impl("extract_backward", &ns::extract_backward);            \
    (m).impl("soft_extract", &ns::soft_extract);                    \
    (m).impl("soft_extract_backward", &ns::soft_extract_backward);  \
  } while (0)
