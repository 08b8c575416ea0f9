#ifndef PANORAMA_MPI_H
#define PANORAMA_MPI_H

#include <stddef.h>

/// MPI loaded at run time (dlopen), so that the program builds and runs without any MPI installed
/// and one binary runs under Open MPI's or MPICH's mpirun. Only byte buffers cross these calls:
/// every reduction the renderer needs is done by the caller in a fixed order, so the results
/// do not depend on the number of processes.

/// Loads the MPI library at `path` (a file name dlopen finds, or a path) and finds its
/// functions. 0 on success; otherwise `error` says what failed and nothing stays loaded.
int panorama_mpi_load(const char *path, char *error, size_t error_size);

/// The library's name as loaded, and which ABI it has ("Open MPI" or "MPICH").
const char *panorama_mpi_library(void);
const char *panorama_mpi_abi(void);

/// MPI_Init_thread (serialized calls) and this process's rank and the world's size.
int panorama_mpi_init(int *rank, int *size);

/// MPI_Allgatherv of bytes over MPI_COMM_WORLD: `counts[r]` bytes from rank r land at
/// `recv + displacements[r]` on every rank.
int panorama_mpi_allgatherv(const void *send, int count, void *recv, const int *counts, const int *displacements);

/// MPI_Allgather of `count` bytes from every rank.
int panorama_mpi_allgather(const void *send, int count, void *recv);

/// MPI_Sendrecv of bytes (a rank of -1 skips that half).
int panorama_mpi_sendrecv(const void *send, int send_count, int destination,
                          void *recv, int recv_count, int source, int tag);

int panorama_mpi_barrier(void);

/// MPI_Abort over MPI_COMM_WORLD: ends every process of the job.
void panorama_mpi_abort(int code);

int panorama_mpi_finalize(void);

/// MPI_Error_string of `code`, into `buffer`.
void panorama_mpi_error_string(int code, char *buffer, size_t size);

#endif
