#include "cimaging.h"
#include <stdio.h>
#include <stdlib.h>
#include <webp/decode.h>

static const char *webp_status_text(VP8StatusCode status) {
    switch (status) {
    case VP8_STATUS_OUT_OF_MEMORY: return "out of memory";
    case VP8_STATUS_INVALID_PARAM: return "invalid parameter";
    case VP8_STATUS_BITSTREAM_ERROR: return "corrupt WebP data";
    case VP8_STATUS_UNSUPPORTED_FEATURE: return "a WebP feature this decoder does not support";
    case VP8_STATUS_SUSPENDED: return "WebP decoding suspended";
    case VP8_STATUS_USER_ABORT: return "WebP decoding aborted";
    case VP8_STATUS_NOT_ENOUGH_DATA: return "the WebP data ends early (truncated)";
    default: return "corrupt WebP data";
    }
}

int pk_webp_read_rgb8(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                      uint64_t max_pixels, char *error, size_t error_size) {
    *pixels = NULL;
    WebPDecoderConfig config;
    if (!WebPInitDecoderConfig(&config)) {
        snprintf(error, error_size, "libwebp version mismatch");
        return -1;
    }
    // the header alone: size, alpha and animation, before anything is allocated
    VP8StatusCode status = WebPGetFeatures(data, size, &config.input);
    if (status != VP8_STATUS_OK) {
        snprintf(error, error_size, "%s", webp_status_text(status));
        return -1;
    }
    if (config.input.has_animation) {
        snprintf(error, error_size, "animated WebP is not supported (give a still image)");
        return -1;
    }
    uint32_t w = (uint32_t)config.input.width, h = (uint32_t)config.input.height;
    if (max_pixels && (uint64_t)w * h > max_pixels) {
        snprintf(error, error_size, "image of %ux%u pixels is larger than allowed", w, h);
        return -1;
    }
    size_t count = (size_t)w * h * 3;
    uint8_t *buffer = malloc(count ? count : 1);
    if (!buffer) {
        snprintf(error, error_size, "out of memory for a %ux%u image", w, h);
        return -1;
    }
    // MODE_RGB drops alpha without compositing, as the PNG reader does; the colour under it
    // is what the file stores (unpremultiplied), as Pillow's RGBA -> RGB gives it.
    config.output.colorspace = MODE_RGB;
    config.output.is_external_memory = 1;
    config.output.u.RGBA.rgba = buffer;
    config.output.u.RGBA.stride = (int)(w * 3);
    config.output.u.RGBA.size = count;
    status = WebPDecode(data, size, &config);
    WebPFreeDecBuffer(&config.output);  // frees nothing with external memory; keeps the pairing
    if (status != VP8_STATUS_OK) {
        free(buffer);
        snprintf(error, error_size, "%s", webp_status_text(status));
        return -1;
    }
    *pixels = buffer;
    *width = w;
    *height = h;
    return 0;
}
