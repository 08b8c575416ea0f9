#ifndef PANORAMA_CIMAGING_H
#define PANORAMA_CIMAGING_H

#include <stddef.h>
#include <stdint.h>

/// libpng and libjpeg report errors by longjmp, which Swift cannot catch; these wrappers do the setjmp and
/// return 0 on success or -1 with a message in `error` (at most `error_size` bytes).

/// Writes 8-bit RGB (`channels` = 3) or RGBA (4) rows to `path`, with text chunks: tEXt for ASCII
/// values, iTXt (UTF-8) for others.
int pk_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                 const char *const *text_keys, const char *const *text_values, int text_count,
                 char *error, size_t error_size);

/// As `pk_png_write`, into memory: `*data` (`*size` bytes) is allocated with malloc and owned by
/// the caller.
int pk_png_write_memory(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                        const char *const *text_keys, const char *const *text_values, int text_count,
                        uint8_t **data, size_t *size, char *error, size_t error_size);

/// Reads a PNG of any colour type and bit depth, converted to 8-bit RGB. `*pixels` is allocated
/// with malloc and owned by the caller. `max_pixels` bounds width x height (0 = no bound).
int pk_png_read_rgb8(const char *path, uint8_t **pixels, uint32_t *width, uint32_t *height,
                     uint64_t max_pixels, char *error, size_t error_size);

/// As `pk_png_read_rgb8`, from the `size` bytes at `data`; the same checks and messages (data
/// that ends early is "the PNG data ends early (truncated)" in both).
int pk_png_read_rgb8_memory(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                            uint64_t max_pixels, char *error, size_t error_size);

/// Inflates the zlib stream `input` into `output`, which holds `capacity` bytes. Returns 0 with
/// the length in `*output_size`, 1 when the data would exceed `capacity` (nothing more is
/// produced, so a decompression bomb costs at most `capacity`), -1 when the stream is corrupt or
/// truncated.
int pk_inflate_bounded(const uint8_t *input, size_t input_size, uint8_t *output, size_t capacity,
                       size_t *output_size);

/// Decodes the JPEG held in `data` (baseline or progressive; grey, YCbCr, RGB, CMYK or YCCK) to
/// 8-bit RGB, as Pillow decodes it (accurate integer IDCT, fancy upsampling; Adobe-inverted CMYK
/// converted with Pillow's formula). Corrupt data that libjpeg would pad over with a warning
/// (a truncated file among others) is an error. `*pixels`, `*exif` and `*xmp` are allocated with
/// malloc and owned by the caller: `*exif` is the first APP1 marker starting "Exif\0\0", `*xmp`
/// the packet of the last XMP APP1 (after its "http://ns.adobe.com/xap/1.0/" NUL header), the
/// ones Pillow keeps, NULL when absent; neither is parsed here. `max_pixels` bounds width x
/// height (0 = no bound), checked from the header before the image is allocated.
int pk_jpeg_read_rgb8(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                      uint8_t **exif, size_t *exif_size, uint8_t **xmp, size_t *xmp_size,
                      uint64_t max_pixels, char *error, size_t error_size);

/// Decodes a still WebP (lossy or lossless) held in `data` to 8-bit RGB; alpha is dropped.
/// Animated WebP is an error. `*pixels` is allocated with malloc and owned by the caller;
/// `max_pixels` as for JPEG.
int pk_webp_read_rgb8(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                      uint64_t max_pixels, char *error, size_t error_size);

#endif
