/* export.h: symbol visibility.  The library is built with
 * -fvisibility=hidden; only declarations marked WEFT_API are exported. */
#ifndef WEFT_EXPORT_H
#define WEFT_EXPORT_H

#if defined(WEFT_BUILDING) && defined(__GNUC__)
#define WEFT_API __attribute__((visibility("default")))
#else
#define WEFT_API
#endif

#ifdef __cplusplus
#define WEFT_BEGIN_DECLS extern "C" {
#define WEFT_END_DECLS }
#else
#define WEFT_BEGIN_DECLS
#define WEFT_END_DECLS
#endif

#endif
