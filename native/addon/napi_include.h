// Every addon file includes napi.h through here so that all of them agree on its configuration.
// Errors are thrown as JS exceptions by hand: the addon is small and C++ exceptions across the
// N-API boundary buy nothing here.
#pragma once

#ifndef NAPI_DISABLE_CPP_EXCEPTIONS
#define NAPI_DISABLE_CPP_EXCEPTIONS
#endif
#include <napi.h>
