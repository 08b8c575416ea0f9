#include "cimaging.h"
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>

/// libjpeg's default error manager prints and calls exit(); this one formats the message into
/// the caller's buffer and longjmps back to pk_jpeg_read_rgb8, which frees everything.
struct jpeg_failure {
    struct jpeg_error_mgr base;
    jmp_buf jump;
    char *message;
    size_t size;
};

static void jpeg_fail(j_common_ptr cinfo, const char *prefix) {
    struct jpeg_failure *failure = (struct jpeg_failure *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(failure->message, failure->size, "%s%s", prefix, text);
    longjmp(failure->jump, 1);
}

static void jpeg_on_error(j_common_ptr cinfo) { jpeg_fail(cinfo, ""); }

/// Level -1 is a warning, which libjpeg raises for corrupt data it then papers over: a
/// truncated file ("Premature end of JPEG file") decodes with grey padding, a damaged entropy
/// segment with garbage. Such a file is refused rather than returned as a plausible image.
/// Levels 0 and above are trace messages, ignored.
static void jpeg_on_message(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_fail(cinfo, "corrupt JPEG data: ");
}

static void jpeg_silent(j_common_ptr cinfo) { (void)cinfo; }

/// A progressive file may hold any number of scans, each of which costs a pass over the whole
/// coefficient buffer: a small hostile file can take minutes. libjpeg-turbo's documentation
/// suggests a limit through the progress monitor; real encoders write about ten scans.
enum { MAX_SCANS = 500 };

static void jpeg_on_progress(j_common_ptr cinfo) {
    j_decompress_ptr decompress = (j_decompress_ptr)cinfo;
    if (decompress->input_scan_number > MAX_SCANS) {
        struct jpeg_failure *failure = (struct jpeg_failure *)cinfo->err;
        snprintf(failure->message, failure->size, "the JPEG holds more than %d scans (corrupt or hostile)", MAX_SCANS);
        longjmp(failure->jump, 1);
    }
}

/// Adobe CMYK as Pillow converts it: Photoshop stores inverted inks (255 - ink), which Pillow
/// reads as "CMYK;I" and turns into RGB with R = (255 - K) - (255 - K) * C / 255 rounded (and
/// the same for G and B with M and Y). In stored values s: R = sK - round((255 - sC) * sK / 255).
static uint8_t cmyk_channel(unsigned stored_ink, unsigned stored_black) {
    unsigned product = (255 - stored_ink) * stored_black + 128;
    unsigned rounded = (product + (product >> 8)) >> 8;  // round(x / 255) for x < 65536
    return (uint8_t)(stored_black - rounded);
}

static const char xmp_header[] = "http://ns.adobe.com/xap/1.0/";  // and its NUL: 29 bytes

int pk_jpeg_read_rgb8(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                      uint8_t **exif, size_t *exif_size, uint8_t **xmp, size_t *xmp_size,
                      uint64_t max_pixels, char *error, size_t error_size) {
    *pixels = NULL;
    *exif = NULL;
    *exif_size = 0;
    *xmp = NULL;
    *xmp_size = 0;
    struct jpeg_decompress_struct cinfo;
    struct jpeg_failure failure;
    struct jpeg_progress_mgr progress;
    uint8_t *volatile buffer = NULL;
    uint8_t *volatile row = NULL;
    uint8_t *volatile exif_copy = NULL;
    uint8_t *volatile xmp_copy = NULL;
    cinfo.err = jpeg_std_error(&failure.base);
    failure.base.error_exit = jpeg_on_error;
    failure.base.emit_message = jpeg_on_message;
    failure.base.output_message = jpeg_silent;
    failure.message = error;
    failure.size = error_size;
    if (setjmp(failure.jump)) {
        free(buffer);
        free(row);
        free(exif_copy);
        free(xmp_copy);
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    jpeg_create_decompress(&cinfo);
    progress.progress_monitor = jpeg_on_progress;
    cinfo.progress = &progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)size);
    // APP1 markers are kept for the orientation in EXIF or XMP (the Swift side parses them);
    // 0xFFFF keeps all of a marker's bytes, the most one can hold.
    jpeg_save_markers(&cinfo, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(&cinfo, TRUE);
    // The first APP1 holding EXIF and the last holding XMP, the ones Pillow keeps; copied now,
    // since the saved markers live in the image pool that jpeg_finish_decompress frees.
    jpeg_saved_marker_ptr exif_marker = NULL, xmp_marker = NULL;
    for (jpeg_saved_marker_ptr marker = cinfo.marker_list; marker; marker = marker->next) {
        if (marker->marker != JPEG_APP0 + 1) continue;
        if (!exif_marker && marker->data_length >= 6 && memcmp(marker->data, "Exif\0\0", 6) == 0) exif_marker = marker;
        if (marker->data_length >= sizeof xmp_header && memcmp(marker->data, xmp_header, sizeof xmp_header) == 0) xmp_marker = marker;
    }
    if (exif_marker) {
        exif_copy = malloc(exif_marker->data_length);
        if (!exif_copy) {
            snprintf(error, error_size, "out of memory");
            longjmp(failure.jump, 1);
        }
        memcpy(exif_copy, exif_marker->data, exif_marker->data_length);
        *exif_size = exif_marker->data_length;
    }
    if (xmp_marker) {
        size_t length = xmp_marker->data_length - sizeof xmp_header;
        xmp_copy = malloc(length ? length : 1);
        if (!xmp_copy) {
            snprintf(error, error_size, "out of memory");
            longjmp(failure.jump, 1);
        }
        memcpy(xmp_copy, xmp_marker->data + sizeof xmp_header, length);
        *xmp_size = length;
    }
    uint32_t w = cinfo.image_width, h = cinfo.image_height;
    if (max_pixels && (uint64_t)w * h > max_pixels) {
        snprintf(error, error_size, "image of %ux%u pixels is larger than allowed", w, h);
        longjmp(failure.jump, 1);
    }
    int cmyk = 0;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        cinfo.out_color_space = JCS_CMYK;  // libjpeg turns YCCK into CMYK
        cmyk = 1;
        break;
    default:
        snprintf(error, error_size, "JPEG with %d colour components of unknown meaning", cinfo.num_components);
        longjmp(failure.jump, 1);
    }
    // The defaults are Pillow's: accurate integer IDCT (JDCT_ISLOW) and fancy upsampling, so the
    // pixels equal Pillow's byte for byte.
    jpeg_start_decompress(&cinfo);
    int components = cinfo.output_components;
    if (cinfo.output_width != w || cinfo.output_height != h || components != (cmyk ? 4 : 3)) {
        snprintf(error, error_size, "unsupported JPEG layout");
        longjmp(failure.jump, 1);
    }
    buffer = malloc((size_t)w * h * 3);
    if (cmyk) row = malloc((size_t)w * 4);
    if (!buffer || (cmyk && !row)) {
        snprintf(error, error_size, "out of memory for a %ux%u image", w, h);
        longjmp(failure.jump, 1);
    }
    while (cinfo.output_scanline < h) {
        uint8_t *out = buffer + (size_t)cinfo.output_scanline * w * 3;
        JSAMPROW target = cmyk ? row : out;
        if (jpeg_read_scanlines(&cinfo, &target, 1) != 1) {
            snprintf(error, error_size, "the JPEG data ends early (truncated)");
            longjmp(failure.jump, 1);
        }
        if (cmyk) {
            for (uint32_t x = 0; x < w; x++) {
                const uint8_t *p = row + (size_t)x * 4;
                out[3 * x] = cmyk_channel(p[0], p[3]);
                out[3 * x + 1] = cmyk_channel(p[1], p[3]);
                out[3 * x + 2] = cmyk_channel(p[2], p[3]);
            }
        }
    }
    // reads up to the EOI marker, so a file cut after its last scanline is refused too
    jpeg_finish_decompress(&cinfo);
    if (failure.base.num_warnings > 0) {
        snprintf(error, error_size, "corrupt JPEG data");
        longjmp(failure.jump, 1);
    }
    free(row);
    jpeg_destroy_decompress(&cinfo);
    *pixels = buffer;
    *exif = exif_copy;
    *xmp = xmp_copy;
    *width = w;
    *height = h;
    return 0;
}
