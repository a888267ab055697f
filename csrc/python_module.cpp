// Python entry point of power_bert_ops._C (setup.py builds it; the CMake library for C++ users
// does not). Importing the module loads the library, whose static initialisers register the
// ops; there is no Python-level binding (no pybind), so the module is an empty stub and the
// extension uses only the limited API (py_limited_api).
#include <Python.h>

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}
