/*
 * weft.h: the umbrella header.  Include this, link with `pkg-config weft`.
 * See docs/ for the architecture and a tour of the API.
 */
#ifndef WEFT_H
#define WEFT_H

#include <weft/version.h>
#include <weft/thread.h>
#include <weft/runtime.h>
#include <weft/group.h>
#include <weft/stats.h>
#include <weft/acquire.h>
#include <weft/io.h>

#endif
