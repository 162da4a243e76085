// Compiles simdjson (the C++ amalgamation that the pysimdjson package ships, found through
// the include path setup.py adds) into the jsontensors extension: our code walks simdjson's
// DOM directly, without a second Python-level wrapper in between.
#include "simdjson.cpp"
