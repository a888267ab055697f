// Classifies token ids with an AOTInductor package of power_bert_ops.export(format="pt2") (power_bert_ops/export/).
//
//   classify MODEL.pt2 IDS.txt
//
// IDS.txt: one input a line, its token ids separated by spaces ([CLS] ... [SEP], already
// tokenised). Rows are right-padded with 0 to the longest line; attention_mask marks the real
// tokens; token_type_ids (when the package takes them) are 0. Prints one line of logits a row.
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/torch.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt2 IDS.txt\n";
    return 2;
  }
  std::ifstream file(argv[2]);
  if (!file) {
    std::cerr << "classify: cannot read " << argv[2] << "\n";
    return 2;
  }
  std::vector<std::vector<int64_t>> rows;
  size_t n = 0;
  for (std::string line; std::getline(file, line);) {
    std::istringstream in(line);
    std::vector<int64_t> ids;
    for (int64_t id; in >> id;) ids.push_back(id);
    if (ids.empty()) continue;
    n = std::max(n, ids.size());
    rows.push_back(std::move(ids));
  }
  if (rows.empty()) {
    std::cerr << "classify: " << argv[2] << " holds no token ids\n";
    return 2;
  }
  const auto B = static_cast<int64_t>(rows.size());
  auto input_ids = torch::zeros({B, static_cast<int64_t>(n)}, torch::kLong);
  auto attention_mask = torch::zeros_like(input_ids);
  for (int64_t b = 0; b < B; ++b) {
    for (size_t t = 0; t < rows[b].size(); ++t) {
      input_ids[b][t] = rows[b][t];
      attention_mask[b][t] = 1;
    }
  }
  try {
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    // power_bert_ops.export stores its settings as JSON under the metadata key "power_bert".
    const auto meta = loader.get_metadata();
    const auto it = meta.find("power_bert");
    const std::string settings = it == meta.end() ? "" : it->second;
    const auto pos = settings.find("\"max_length\": ");
    if (pos != std::string::npos) {
      const long max_length = std::stol(settings.substr(pos + 14));
      if (static_cast<long>(n) > max_length) {
        std::cerr << "classify: the longest input has " << n << " tokens but " << argv[1] << " takes at most "
                  << max_length << " (the trained N); truncate the input\n";
        return 2;
      }
    }
    std::vector<at::Tensor> inputs{input_ids, attention_mask};
    if (settings.find("token_type_ids") != std::string::npos) inputs.push_back(torch::zeros_like(input_ids));
    torch::NoGradGuard no_grad;
    const auto logits = loader.run(inputs).at(0).contiguous().to(torch::kFloat);
    const float* p = logits.data_ptr<float>();
    for (int64_t b = 0; b < logits.size(0); ++b) {
      for (int64_t c = 0; c < logits.size(1); ++c) std::printf(c ? " %.7g" : "%.7g", p[b * logits.size(1) + c]);
      std::printf("\n");
    }
  } catch (const std::exception& e) {
    std::cerr << "classify: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
