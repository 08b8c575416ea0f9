// MPI through dlopen. The two ABIs in use differ in how handles look: Open MPI's are pointers to
// exported objects (MPI_COMM_WORLD is &ompi_mpi_comm_world), MPICH's (and Intel MPI's, MVAPICH's)
// are integers fixed by its mpi.h. Calls are made through function pointers of the matching
// types; no mpi.h is needed to build.
#include "panorama_mpi.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { ABI_NONE, ABI_OPENMPI, ABI_MPICH };
static int abi = ABI_NONE;
static void *library;
static char library_name[256];

// Open MPI: handles are pointers.
typedef void *ompi_handle;
static ompi_handle ompi_comm_world, ompi_byte;
// MPICH: handles are ints, values from MPICH's mpi.h.
typedef int mpich_handle;
static const mpich_handle mpich_comm_world = 0x44000000, mpich_byte = 0x4c00010d;

static int (*p_init_thread)(int *, char ***, int, int *);
static int (*p_finalize)(void);
static int (*p_error_string)(int, char *, int *);
// Each function taking handles has one pointer per ABI.
static int (*o_comm_rank)(ompi_handle, int *), (*m_comm_rank)(mpich_handle, int *);
static int (*o_comm_size)(ompi_handle, int *), (*m_comm_size)(mpich_handle, int *);
static int (*o_allgatherv)(const void *, int, ompi_handle, void *, const int *, const int *, ompi_handle, ompi_handle);
static int (*m_allgatherv)(const void *, int, mpich_handle, void *, const int *, const int *, mpich_handle, mpich_handle);
static int (*o_allgather)(const void *, int, ompi_handle, void *, int, ompi_handle, ompi_handle);
static int (*m_allgather)(const void *, int, mpich_handle, void *, int, mpich_handle, mpich_handle);
static int (*o_sendrecv)(const void *, int, ompi_handle, int, int, void *, int, ompi_handle, int, int, ompi_handle, void *);
static int (*m_sendrecv)(const void *, int, mpich_handle, int, int, void *, int, mpich_handle, int, int, mpich_handle, void *);
static int (*o_barrier)(ompi_handle), (*m_barrier)(mpich_handle);
static int (*o_abort)(ompi_handle, int), (*m_abort)(mpich_handle, int);
static int proc_null;

#define FIND(dest, name)                                                                 \
    do {                                                                                 \
        *(void **)(&dest) = dlsym(library, name);                                        \
        if (!dest) {                                                                     \
            snprintf(error, error_size, "%s has no %s", library_name, name);             \
            return unload();                                                             \
        }                                                                                \
    } while (0)

// After a failed load: nothing stays loaded, so another library can be tried.
static int unload(void) {
    if (library) dlclose(library);
    library = NULL;
    abi = ABI_NONE;
    library_name[0] = 0;
    return -1;
}

int panorama_mpi_load(const char *path, char *error, size_t error_size) {
    if (library) return 0;
    // RTLD_GLOBAL: Open MPI's components are libraries that resolve their symbols from libmpi.
    library = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
    if (!library) {
        const char *why = dlerror();
        snprintf(error, error_size, "%s", why ? why : "cannot load it");
        return -1;
    }
    snprintf(library_name, sizeof library_name, "%s", path);
    ompi_comm_world = dlsym(library, "ompi_mpi_comm_world");
    abi = ompi_comm_world ? ABI_OPENMPI : ABI_MPICH;
    if (abi == ABI_OPENMPI) {
        ompi_byte = dlsym(library, "ompi_mpi_byte");
        if (!ompi_byte) {
            snprintf(error, error_size, "%s has ompi_mpi_comm_world but no ompi_mpi_byte", library_name);
            return unload();
        }
    } else {
        // Not Open MPI: it must say it is MPICH or one that shares MPICH's ABI (Intel MPI,
        // MVAPICH), or its handles' values are unknown here. MPI_Get_library_version may be
        // called before MPI_Init.
        int (*version)(char *, int *) = NULL;
        FIND(version, "MPI_Get_library_version");
        static char text[8192];  // MPICH's MPI_MAX_LIBRARY_VERSION_STRING
        int length = 0;
        if (version(text, &length) != 0) length = 0;
        text[length > 0 && length < (int)sizeof text ? length : 0] = 0;
        if (!strstr(text, "MPICH") && !strstr(text, "Intel") && !strstr(text, "MVAPICH")) {
            snprintf(error, error_size, "%s is neither Open MPI nor MPICH-compatible (it says: %.200s)",
                     library_name, text);
            return unload();
        }
    }
    FIND(p_init_thread, "MPI_Init_thread");
    FIND(p_finalize, "MPI_Finalize");
    FIND(p_error_string, "MPI_Error_string");
    if (abi == ABI_OPENMPI) {
        FIND(o_comm_rank, "MPI_Comm_rank"); FIND(o_comm_size, "MPI_Comm_size");
        FIND(o_allgatherv, "MPI_Allgatherv"); FIND(o_allgather, "MPI_Allgather");
        FIND(o_sendrecv, "MPI_Sendrecv");
        FIND(o_barrier, "MPI_Barrier"); FIND(o_abort, "MPI_Abort");
        proc_null = -2;  // Open MPI's MPI_PROC_NULL
    } else {
        FIND(m_comm_rank, "MPI_Comm_rank"); FIND(m_comm_size, "MPI_Comm_size");
        FIND(m_allgatherv, "MPI_Allgatherv"); FIND(m_allgather, "MPI_Allgather");
        FIND(m_sendrecv, "MPI_Sendrecv");
        FIND(m_barrier, "MPI_Barrier"); FIND(m_abort, "MPI_Abort");
        proc_null = -1;  // MPICH's MPI_PROC_NULL
    }
    return 0;
}

const char *panorama_mpi_library(void) { return library_name; }

const char *panorama_mpi_abi(void) {
    return abi == ABI_OPENMPI ? "Open MPI" : abi == ABI_MPICH ? "MPICH" : "none";
}

int panorama_mpi_init(int *rank, int *size) {
    int provided = 0;
    int status = p_init_thread(NULL, NULL, 2 /* MPI_THREAD_SERIALIZED */, &provided);
    if (status) return status;
    if (abi == ABI_OPENMPI) {
        status = o_comm_rank(ompi_comm_world, rank);
        return status ? status : o_comm_size(ompi_comm_world, size);
    }
    status = m_comm_rank(mpich_comm_world, rank);
    return status ? status : m_comm_size(mpich_comm_world, size);
}

int panorama_mpi_allgatherv(const void *send, int count, void *recv, const int *counts, const int *displacements) {
    if (abi == ABI_OPENMPI)
        return o_allgatherv(send, count, ompi_byte, recv, counts, displacements, ompi_byte, ompi_comm_world);
    return m_allgatherv(send, count, mpich_byte, recv, counts, displacements, mpich_byte, mpich_comm_world);
}

int panorama_mpi_allgather(const void *send, int count, void *recv) {
    if (abi == ABI_OPENMPI) return o_allgather(send, count, ompi_byte, recv, count, ompi_byte, ompi_comm_world);
    return m_allgather(send, count, mpich_byte, recv, count, mpich_byte, mpich_comm_world);
}

int panorama_mpi_sendrecv(const void *send, int send_count, int destination,
                          void *recv, int recv_count, int source, int tag) {
    if (destination < 0) destination = proc_null;
    if (source < 0) source = proc_null;
    // MPI_STATUS_IGNORE: NULL in Open MPI, 1 in MPICH.
    if (abi == ABI_OPENMPI)
        return o_sendrecv(send, send_count, ompi_byte, destination, tag, recv, recv_count, ompi_byte, source, tag,
                          ompi_comm_world, NULL);
    return m_sendrecv(send, send_count, mpich_byte, destination, tag, recv, recv_count, mpich_byte, source, tag,
                      mpich_comm_world, (void *)(intptr_t)1);
}

int panorama_mpi_barrier(void) {
    return abi == ABI_OPENMPI ? o_barrier(ompi_comm_world) : m_barrier(mpich_comm_world);
}

void panorama_mpi_abort(int code) {
    if (abi == ABI_OPENMPI) o_abort(ompi_comm_world, code);
    else if (abi == ABI_MPICH) m_abort(mpich_comm_world, code);
}

int panorama_mpi_finalize(void) { return p_finalize(); }

void panorama_mpi_error_string(int code, char *buffer, size_t size) {
    int length = 0;
    char text[1024];  // MPI_MAX_ERROR_STRING is at most 512 in both
    if (size == 0) return;
    if (p_error_string && p_error_string(code, text, &length) == 0 && length > 0 && length < (int)sizeof text) {
        text[length] = 0;
        snprintf(buffer, size, "%s", text);
    } else {
        snprintf(buffer, size, "MPI error %d", code);
    }
}
