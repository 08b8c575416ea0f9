#include "cimaging.h"
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

struct error_context {
    jmp_buf jump;
    char *message;
    size_t size;
};

static void on_error(png_structp png, png_const_charp message) {
    struct error_context *context = png_get_error_ptr(png);
    snprintf(context->message, context->size, "%s", message);
    longjmp(context->jump, 1);
}

static void on_warning(png_structp png, png_const_charp message) {
    (void)png;
    (void)message;
}

/// Where encoded bytes go: a FILE, or a malloc'd buffer grown as needed.
struct memory_sink {
    uint8_t *data;
    size_t size, capacity;
};

static void write_memory(png_structp png, png_bytep bytes, size_t count) {
    struct memory_sink *sink = png_get_io_ptr(png);
    if (count > sink->capacity - sink->size) {
        size_t capacity = sink->capacity ? sink->capacity : 1 << 16;
        while (count > capacity - sink->size) {
            if (capacity > SIZE_MAX / 2) png_error(png, "out of memory");
            capacity *= 2;
        }
        uint8_t *grown = realloc(sink->data, capacity);
        if (!grown) png_error(png, "out of memory");
        sink->data = grown;
        sink->capacity = capacity;
    }
    memcpy(sink->data + sink->size, bytes, count);
    sink->size += count;
}

static void flush_memory(png_structp png) { (void)png; }

/// The encoder behind both writers: to `file`, or else to `sink`.
static int write_png(FILE *file, struct memory_sink *sink, const uint8_t *pixels, uint32_t width, uint32_t height,
                     int channels, const char *const *text_keys, const char *const *text_values, int text_count,
                     char *error, size_t error_size) {
    struct error_context context = {.message = error, .size = error_size};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &context, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    // assigned after setjmp and freed after a longjmp: volatile, so its value survives the jump
    png_textp volatile text = NULL;
    if (!png || !info) {
        snprintf(error, error_size, "out of memory");
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    if (setjmp(context.jump)) {
        free(text);
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    if (file) png_init_io(png, file);
    else png_set_write_fn(png, sink, write_memory, flush_memory);
    png_set_IHDR(png, info, width, height, 8, channels == 4 ? PNG_COLOR_TYPE_RGBA : PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (text_count > 0) {
        text = calloc((size_t)text_count, sizeof(png_text));
        if (!text) png_error(png, "out of memory");
        for (int i = 0; i < text_count; i++) {
            // tEXt holds Latin-1 only: text with any byte outside ASCII goes into an uncompressed
            // iTXt chunk (UTF-8), as Pillow and so A1111 write it; readers that decode tEXt as
            // Latin-1 would otherwise garble it.
            int ascii = 1;
            for (const unsigned char *c = (const unsigned char *)text_values[i]; *c; c++) {
                if (*c >= 0x80) { ascii = 0; break; }
            }
            text[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
            text[i].key = (png_charp)text_keys[i];
            text[i].text = (png_charp)text_values[i];
        }
        png_set_text(png, info, text, text_count);
    }
    png_write_info(png, info);
    for (uint32_t y = 0; y < height; y++) {
        png_write_row(png, (png_const_bytep)(pixels + (size_t)y * width * (size_t)channels));
    }
    png_write_end(png, NULL);
    free(text);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int pk_png_write(const char *path, const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                 const char *const *text_keys, const char *const *text_values, int text_count,
                 char *error, size_t error_size) {
    FILE *file = fopen(path, "wb");
    if (!file) {
        snprintf(error, error_size, "cannot open for writing");
        return -1;
    }
    int status = write_png(file, NULL, pixels, width, height, channels, text_keys, text_values, text_count, error, error_size);
    if (fclose(file) != 0 && status == 0) {
        snprintf(error, error_size, "write failed (disk full?)");
        return -1;
    }
    return status;
}

int pk_png_write_memory(const uint8_t *pixels, uint32_t width, uint32_t height, int channels,
                        const char *const *text_keys, const char *const *text_values, int text_count,
                        uint8_t **data, size_t *size, char *error, size_t error_size) {
    struct memory_sink sink = {0};
    *data = NULL;
    *size = 0;
    if (write_png(NULL, &sink, pixels, width, height, channels, text_keys, text_values, text_count, error, error_size) != 0) {
        free(sink.data);
        return -1;
    }
    *data = sink.data;
    *size = sink.size;
    return 0;
}

/// Where encoded bytes come from when not a FILE.
struct memory_source {
    const uint8_t *data;
    size_t size, offset;
};

// Both readers say the same of data that ends early (libpng's own FILE reader says "Read Error").
static const char *const truncated = "the PNG data ends early (truncated)";

static void read_memory(png_structp png, png_bytep bytes, size_t count) {
    struct memory_source *source = png_get_io_ptr(png);
    if (count > source->size - source->offset) png_error(png, truncated);
    memcpy(bytes, source->data + source->offset, count);
    source->offset += count;
}

static void read_file(png_structp png, png_bytep bytes, size_t count) {
    FILE *file = png_get_io_ptr(png);
    if (fread(bytes, 1, count, file) != count) png_error(png, ferror(file) ? "cannot read the file" : truncated);
}

/// The decoder behind both readers: from `file`, or else from `source`, the 8-byte signature
/// already checked and consumed.
static int read_png(FILE *file, struct memory_source *source, uint8_t **pixels, uint32_t *width, uint32_t *height,
                    uint64_t max_pixels, char *error, size_t error_size) {
    struct error_context context = {.message = error, .size = error_size};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &context, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    uint8_t *volatile buffer = NULL;
    png_bytep *volatile rows = NULL;
    if (!png || !info) {
        snprintf(error, error_size, "out of memory");
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (setjmp(context.jump)) {
        free(buffer);
        free(rows);
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    if (file) png_set_read_fn(png, file, read_file);
    else png_set_read_fn(png, source, read_memory);
    // Ancillary chunks that do not change the RGB pixels read here are skipped unread: libpng
    // would otherwise allocate and zero a buffer of whatever length a text (or other) chunk
    // claims, up to 2 GiB for a 69-byte file. Text is read by PNG.textChunks, with its own checks.
    static const png_byte ignored[] = "bKGD\0cHRM\0eXIf\0gAMA\0hIST\0iCCP\0iTXt\0oFFs\0pCAL\0pHYs\0"
                                      "sBIT\0sCAL\0sPLT\0sTER\0sRGB\0tEXt\0tIME\0zTXt\0";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, ignored, (int)(sizeof ignored / 5));
    png_set_sig_bytes(png, 8);
    // A chunk's length comes from the file, and libpng allocates that much for the chunks it keeps
    // before reading them: a 69-byte file whose tEXt chunk claimed 1.9 GB made it allocate and
    // clear 1.9 GB (found by fuzzing; libpng's own chunk size limit is only a warning when
    // reading). The ancillary chunks that decoding does not use, among them all that libpng
    // allocates for (text, eXIf, iCCP, sPLT, pCAL, sCAL), are skipped unread instead; text chunks
    // are read by PNG.textChunks, which checks their lengths against the file first.
    static const png_byte skipped[] = "tEXt\0zTXt\0iTXt\0eXIf\0iCCP\0sPLT\0pCAL\0sCAL\0hIST\0tIME\0oFFs\0pHYs\0sBIT\0bKGD";
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, skipped, (int)(sizeof skipped / 5));
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (max_pixels && (uint64_t)w * h > max_pixels) {
        snprintf(error, error_size, "image of %ux%u pixels is larger than allowed", w, h);
        longjmp(context.jump, 1);
    }
    int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16) png_set_strip_16(png);
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png);
    if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    // Alpha is dropped (composited over nothing): the models take RGB.
    png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3) {
        snprintf(error, error_size, "unsupported PNG layout");
        longjmp(context.jump, 1);
    }
    buffer = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!buffer || !rows) {
        snprintf(error, error_size, "out of memory for a %ux%u image", w, h);
        longjmp(context.jump, 1);
    }
    for (uint32_t y = 0; y < h; y++) rows[y] = buffer + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    *pixels = buffer;
    *width = w;
    *height = h;
    return 0;
}

int pk_png_read_rgb8(const char *path, uint8_t **pixels, uint32_t *width, uint32_t *height,
                     uint64_t max_pixels, char *error, size_t error_size) {
    *pixels = NULL;
    FILE *file = fopen(path, "rb");
    if (!file) {
        snprintf(error, error_size, "cannot open for reading");
        return -1;
    }
    uint8_t signature[8];
    if (fread(signature, 1, 8, file) != 8 || png_sig_cmp(signature, 0, 8) != 0) {
        snprintf(error, error_size, "not a PNG file");
        fclose(file);
        return -1;
    }
    int status = read_png(file, NULL, pixels, width, height, max_pixels, error, error_size);
    fclose(file);
    return status;
}

int pk_png_read_rgb8_memory(const uint8_t *data, size_t size, uint8_t **pixels, uint32_t *width, uint32_t *height,
                            uint64_t max_pixels, char *error, size_t error_size) {
    *pixels = NULL;
    if (size < 8 || png_sig_cmp(data, 0, 8) != 0) {
        snprintf(error, error_size, "not a PNG file");
        return -1;
    }
    struct memory_source source = {.data = data, .size = size, .offset = 8};
    return read_png(NULL, &source, pixels, width, height, max_pixels, error, error_size);
}

int pk_inflate_bounded(const uint8_t *input, size_t input_size, uint8_t *output, size_t capacity,
                       size_t *output_size) {
    *output_size = 0;
    z_stream stream;
    memset(&stream, 0, sizeof stream);
    if (inflateInit(&stream) != Z_OK) return -1;
    // zlib counts in uInt; PNG chunks are at most 2^31 - 1 bytes, and callers bound `capacity`
    if (input_size > UINT32_MAX || capacity > UINT32_MAX) {
        inflateEnd(&stream);
        return -1;
    }
    stream.next_in = (Bytef *)input;
    stream.avail_in = (uInt)input_size;
    stream.next_out = output;
    stream.avail_out = (uInt)capacity;
    int status = inflate(&stream, Z_FINISH);
    size_t produced = capacity - stream.avail_out;
    inflateEnd(&stream);
    if (status == Z_STREAM_END) {
        *output_size = produced;
        return 0;
    }
    // Z_BUF_ERROR with a full buffer: the text is longer than allowed (a decompression bomb or not)
    if ((status == Z_BUF_ERROR || status == Z_OK) && stream.avail_out == 0) return 1;
    return -1;
}
