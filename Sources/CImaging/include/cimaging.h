#ifndef PANORAMA_CIMAGING_H
#define PANORAMA_CIMAGING_H

#include <stddef.h>
#include <stdint.h>

/// libpng reports errors by longjmp, which Swift cannot catch; these wrappers do the setjmp and
/// return 0 on success or -1 with a message in `error` (at most `error_size` bytes).

/// Writes 8-bit RGB (`channels` = 3) or RGBA (4) rows to `path`, with text chunks: tEXt for ASCII
/// values, iTXt (UTF-8) for others.
int pk_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                 const char *const *text_keys, const char *const *text_values, int text_count,
                 char *error, size_t error_size);

/// Reads a PNG of any colour type and bit depth, converted to 8-bit RGB. `*pixels` is allocated
/// with malloc and owned by the caller. `max_pixels` bounds width x height (0 = no bound).
int pk_png_read_rgb8(const char *path, uint8_t **pixels, uint32_t *width, uint32_t *height,
                     uint64_t max_pixels, char *error, size_t error_size);

/// Inflates the zlib stream `input` into `output`, which holds `capacity` bytes. Returns 0 with
/// the length in `*output_size`, 1 when the data would exceed `capacity` (nothing more is
/// produced, so a decompression bomb costs at most `capacity`), -1 when the stream is corrupt or
/// truncated.
int pk_inflate_bounded(const uint8_t *input, size_t input_size, uint8_t *output, size_t capacity,
                       size_t *output_size);

#endif
