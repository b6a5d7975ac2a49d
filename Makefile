# Makefile for lt: builds bin/lt-embed (and bin/lt-train once it exists), the HDF5 zstd plugin,
# the tests; `make test`, `make bench`, `make test-cuda`, `make demo`. See README.md.
#
#   make            build everything (CUDA backend too when nvcc is found; CUDA=0 to skip it)
#   make test       install missing packages, build, run the whole CPU test suite
#   make test-cuda  CUDA-vs-CPU tests (needs a GPU; fails when nothing could be tested)
#   make dev-cuda   the earlier CUDA kernels of dev/cuda/, each with a check and a benchmark
#                   against the production kernel (built by `make` too when CUDA is on)
#   make demo       install, build, run lt-embed (then lt-train) on a generated sample set
#   make install    the tools, the HDF5 filter plugin, the docs and man pages under PREFIX
#                   (/usr/local; DESTDIR for staging); make uninstall removes them again
#   make bench      throughput against PyTorch on this machine
#   make asan       the unit tests, both tools and the fuzz-regression replays built with
#                   ASan+UBSan into build-asan/ (CPU only); `make test` builds and runs them
#   make fuzz       libFuzzer targets (needs clang: scripts/install-deps.sh --fuzz), each run for
#                   FUZZ_SECONDS (60) seconds; crashes land in tests/fuzz/regressions/ (see
#                   tests/fuzz/README.md)

CC      ?= gcc
PYTHON  ?= /usr/bin/python3
BUILD   := build
BINDIR  := bin
PKGS    := hdf5 libturbojpeg libpng libzstd openblas zlib
# x86-64-v3: AVX2 + FMA (x86 CPUs since 2013-2015); older CPUs: make OPT="-O2 -march=x86-64-v2"
OPT     ?= -O2 -march=x86-64-v3
CFLAGS  += $(OPT) -g -std=c11 -D_GNU_SOURCE -Wall -Wextra -fPIC -fopenmp -Ilib \
           $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  += $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -lpthread
LDFLAGS += -fopenmp

# SAN=1: AddressSanitizer + UndefinedBehaviorSanitizer (used by `make asan` with BUILD=build-asan).
# SAN=fuzz: the same plus libFuzzer's coverage instrumentation (used by `make fuzz`, with clang).
SAN     ?= 0
SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
ifeq ($(SAN),1)
  OPT     := -O1 -march=x86-64-v2
  CFLAGS  += $(SANFLAGS)
  LDFLAGS += $(SANFLAGS)
endif
ifeq ($(SAN),fuzz)
  OPT     := -O1 -march=x86-64-v2
  CFLAGS  += $(SANFLAGS) -fsanitize=fuzzer-no-link -Wno-pass-failed
  LDFLAGS += $(SANFLAGS)
endif

# Rendering must give identical bytes on every machine: no FMA contraction there, on the CPU and
# in the CUDA renderer, and IEEE division on the GPU (docs/architecture.md §4).
$(BUILD)/lib/image/%.o: CFLAGS += -ffp-contract=off
NOFMA_NVCC := -fmad=false -prec-div=true -ftz=false -Xcompiler -ffp-contract=off
$(BUILD)/lib/image/%.cu.o $(BUILD)/lib/image/%.cu.ptx: NVCCFLAGS += $(NOFMA_NVCC)
# The optimizer's kernels too: the scalar rules of nn/optim_rules.h in double (a trust ratio's
# gn + pn·wd) must round as optim.c's do on the host, for the device step's bit-identity.
$(BUILD)/lib/nn/optim_%.cu.o $(BUILD)/lib/nn/optim_%.cu.ptx: NVCCFLAGS += $(NOFMA_NVCC)

# ---- CUDA backend (built when nvcc is present unless CUDA=0) ----
NVCC    ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA    ?= $(if $(NVCC),1,0)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
# cuDNN (the student's convolutions): under CUDA_HOME here; elsewhere (a pip or distribution
# package) set CUDNN_HOME to the folder holding include/cudnn.h and lib64/ (or lib/) libcudnn.so.
CUDNN_HOME ?= $(CUDA_HOME)
comma := ,
CUDNN_LIBDIR ?= $(firstword $(wildcard $(CUDNN_HOME)/lib64/libcudnn.so*) $(wildcard $(CUDNN_HOME)/lib/libcudnn.so*))
CUDNN_LIBDIR := $(if $(CUDNN_LIBDIR),$(patsubst %/,%,$(dir $(CUDNN_LIBDIR))),$(CUDNN_HOME)/lib64)
NVCCFLAGS ?= -O2 -std=c++17 -Ilib --compiler-options -fPIC,-Wall,-Wextra \
             -gencode arch=compute_90,code=sm_90 -gencode arch=compute_80,code=sm_80
ifeq ($(CUDA),1)
  CFLAGS  += -DLT_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  # a tool records only the CUDA libraries it calls (lt-embed and lt-eval never load cuDNN)
  LDFLAGS += -Wl,--as-needed
  NVCCFLAGS += $(if $(filter-out $(CUDA_HOME),$(CUDNN_HOME)),-I$(CUDNN_HOME)/include)
  LDLIBS  += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
             $(if $(filter-out $(CUDA_HOME)/lib64,$(CUDNN_LIBDIR)),-L$(CUDNN_LIBDIR) -Wl$(comma)-rpath$(comma)$(CUDNN_LIBDIR)) \
             -lcudnn -lcublasLt -lcublas -lcudart -lstdc++
  LIB_CU  := $(wildcard lib/*/*.cu)
  # dev/cuda/: superseded kernel versions with their benchmarks (see dev/cuda/README.md)
  DEV_CUDA := $(patsubst dev/cuda/%.cu,$(BUILD)/dev/cuda/%,$(wildcard dev/cuda/*.cu))
endif

# ---- MPI for data-parallel lt-train (`mpirun -np P lt-train`; built when Open MPI's or MPICH's
# pkg-config file is found unless MPI=0). Only lib/train/comm_mpi.c includes mpi.h and only
# lt-train links it: the other tools never load libmpi.
MPI_PC  ?= $(firstword $(foreach p,ompi-c mpich,$(if $(shell pkg-config --exists $(p) 2>/dev/null && echo y),$(p))))
MPI     ?= $(if $(MPI_PC),1,0)
ifeq ($(MPI),1)
  $(BUILD)/lib/train/comm_mpi.o: CFLAGS += -DLT_HAVE_MPI=1 $(shell pkg-config --cflags $(MPI_PC))
  $(BINDIR)/lt-train: LDLIBS += $(shell pkg-config --libs $(MPI_PC))
endif

# ---- NCCL for data-parallel lt-train on GPUs (with CUDA and MPI, when nccl.h is found in the CUDA
# toolkit or /usr/include unless NCCL=0). Only lib/train/comm_nccl.c includes nccl.h; it loads
# libnccl.so.2 when a run first needs it (from the folder it was found in here, else the loader's
# search), so no binary links NCCL.
NCCL_INC ?= $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/local/include/nccl.h /usr/include/nccl.h))
NCCL    ?= $(if $(and $(filter 1,$(CUDA)),$(filter 1,$(MPI)),$(NCCL_INC)),1,0)
ifeq ($(NCCL),1)
  NCCL_LIBDIR ?= $(patsubst %/,%,$(dir $(firstword $(wildcard $(CUDA_HOME)/lib64/libnccl.so.2 \
                    /usr/lib/x86_64-linux-gnu/libnccl.so.2 /usr/local/lib/libnccl.so.2))))
  $(BUILD)/lib/train/comm_nccl.o: CFLAGS += -DLT_HAVE_NCCL=1 -I$(dir $(NCCL_INC)) \
                                            -DLT_NCCL_LIBDIR='"$(NCCL_LIBDIR)"'

endif

# lib/nn/cuda_stub.c stands in for the CUDA backend (same symbols, "no CUDA" errors) when CUDA=0.
LIB_C   := $(filter-out $(if $(filter 1,$(CUDA)),lib/nn/cuda_stub.c),$(wildcard lib/*/*.c))
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(LIB_CU:%.cu=$(BUILD)/%.cu.o)
LIBLT   := $(BUILD)/liblt.a
PLUGIN  := $(BUILD)/plugins/libh5zstd.so
TOOLS   := $(patsubst tools/%/,$(BINDIR)/lt-%,$(sort $(dir $(wildcard tools/*/main.c))))
TESTS   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(wildcard tests/unit/test_*.c)) \
           $(BUILD)/tests/test_render_emu $(BUILD)/tests/test_optim_emu
CUDA_TESTS := $(patsubst tests/cuda/%.c,$(BUILD)/tests/%,$(wildcard tests/cuda/test_*.c))
# Small programs the Python tests drive (decode one file, render one recipe, run the teacher...).
TEST_TOOLS := $(patsubst tests/tools/%.c,$(BUILD)/tests/tools/%,$(wildcard tests/tools/*.c))
# Fuzz targets (tests/fuzz/fuzz_*.c): libFuzzer binaries under SAN=fuzz, and plain "replay"
# programs (the same code, a main() that feeds it files) for the ASan build that `make test` runs.
FUZZ_NAMES  := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS   := $(FUZZ_NAMES:%=$(BUILD)/fuzz/fuzz_%)
FUZZ_REPLAY := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)
ASAN_BUILD  := build-asan
FUZZ_BUILD  := build-fuzz
FUZZ_SECONDS ?= 60

.PHONY: all deps deps-test test test-cuda dev-cuda bench bench-quick demo fuzz clean check-deps \
        asan asan-targets fuzz-targets man install uninstall
all: check-deps $(TOOLS) $(PLUGIN) $(TESTS) $(CUDA_TESTS) $(TEST_TOOLS) $(DEV_CUDA)

check-deps:
	@for p in $(PKGS); do \
	  v=$$(pkg-config --modversion $$p 2>/dev/null) && echo "lt: found $$p $$v" || \
	  { echo "lt: missing $$p: run scripts/install-deps.sh (or make deps)"; exit 1; }; done
	@if [ "$(CUDA)" = 1 ]; then echo "lt: found nvcc $(NVCC): building the CUDA backend"; \
	 else echo "lt: CUDA backend off (no nvcc, or CUDA=0): CPU only"; fi
	@if [ "$(MPI)" = 1 ]; then echo "lt: found MPI ($(MPI_PC)): mpirun -np P lt-train trains data-parallel"; \
	 else echo "lt: MPI off (no Open MPI/MPICH, or MPI=0): lt-train runs as one process"; fi

deps:
	bash scripts/install-deps.sh
deps-test:
	bash scripts/install-deps.sh --test

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

# PTX of one file for one architecture, with the file's own flags (tests/py/test_no_fma.py reads
# it: no fused multiply-add where results must be the CPU's)
$(BUILD)/%.cu.ptx: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(filter-out -gencode arch=%,$(NVCCFLAGS)) -arch=compute_90 --ptx $< -o $@

$(LIBLT): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BINDIR)/lt-%: $(BUILD)/tools/%/main.o $(LIBLT)
	@mkdir -p $(BINDIR)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

# The HDF5 filter plugin: lets stock h5py / h5dump read our zstd-compressed datasets.
$(PLUGIN): $(BUILD)/lib/data/h5zstd.o $(BUILD)/plugin/h5zstd_plugin.o
	@mkdir -p $(dir $@)
	$(CC) -shared $^ $(shell pkg-config --libs hdf5 libzstd) -o $@

$(BUILD)/plugin/h5zstd_plugin.o: lib/data/plugin/h5zstd_plugin.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

# CUDA kernels compiled for the CPU (tests/unit/cuda_emu.h), CUDA or not: the renderer's and the
# multi-tensor optimizer's, each test with the files it includes.
CXX     ?= g++
$(BUILD)/tests/test_render_emu: tests/cuda/test_cuda_render.c lib/image/render_cuda.cu \
                                lib/image/render_px.h
$(BUILD)/tests/test_optim_emu: lib/nn/optim_multi_cuda.cu lib/nn/optim_multi.h lib/nn/optim_rules.h
$(BUILD)/tests/test_%_emu: tests/unit/test_%_emu.cpp tests/unit/cuda_emu.h tests/cuda/test_rng.h $(LIBLT)
	@mkdir -p $(dir $@)
	$(CXX) $(OPT) $(filter -fsanitize% -fno-sanitize% -fno-omit-frame-pointer,$(CFLAGS)) -g \
	  -std=c++20 -ffp-contract=off -Wall -Wextra -Ilib -pthread $< $(LIBLT) $(LDFLAGS) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(LIBLT)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/tools/%: $(BUILD)/tests/tools/%.o $(LIBLT)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/tests/cuda/%.o $(LIBLT)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(DEV_CUDA): $(BUILD)/dev/cuda/%: $(BUILD)/dev/cuda/%.cu.o $(LIBLT)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

dev-cuda:
	@[ "$(CUDA)" = 1 ] || { echo "make dev-cuda needs nvcc (the CUDA backend is off)"; exit 1; }
	$(MAKE) $(DEV_CUDA)

$(BUILD)/fuzz/fuzz_%: $(BUILD)/tests/fuzz/fuzz_%.o $(LIBLT)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

$(BUILD)/fuzz/replay_%: $(BUILD)/tests/fuzz/fuzz_%.o $(BUILD)/tests/fuzz/replay.o $(LIBLT)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $^ $(LDLIBS) -o $@

.SECONDARY: $(FUZZ_NAMES:%=$(BUILD)/tests/fuzz/fuzz_%.o) $(BUILD)/tests/fuzz/replay.o \
            $(DEV_CUDA:%=%.cu.o)

# ASan+UBSan build of the C unit tests, both tools and the fuzz replays (CPU only: the CUDA
# backend is not instrumented). Separate folder, so it never mixes with the normal objects.
asan:
	$(MAKE) SAN=1 CUDA=0 BUILD=$(ASAN_BUILD) BINDIR=$(ASAN_BUILD)/bin asan-targets
asan-targets: $(TOOLS) $(TESTS) $(FUZZ_REPLAY)

# libFuzzer: clang only (scripts/install-deps.sh --fuzz installs it); not part of `make test`.
fuzz:
	@command -v clang >/dev/null || { echo "make fuzz needs clang: scripts/install-deps.sh --fuzz"; exit 1; }
	$(MAKE) CC=clang SAN=fuzz CUDA=0 BUILD=$(FUZZ_BUILD) BINDIR=$(FUZZ_BUILD)/bin fuzz-targets
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_BUILD=$(FUZZ_BUILD) bash tests/fuzz/run.sh $(FUZZ_NAMES)
fuzz-targets: $(FUZZ_BINS)

test: deps-test
	$(MAKE) all
	$(MAKE) asan
	PYTHON=$(PYTHON) bash tests/run.sh

test-cuda: all
	PYTHON=$(PYTHON) bash tests/run-cuda.sh

bench: all
	$(PYTHON) scripts/bench/bench.py

bench-quick: all
	$(PYTHON) scripts/bench/bench.py --quick

demo: deps
	$(MAKE) all
	bash scripts/demo.sh

# ---- installation: $(DESTDIR)$(PREFIX)/{bin, lib/hdf5/plugins, share/doc/lt, share/man/man1} ----
PREFIX  ?= /usr/local
I_BIN    = $(DESTDIR)$(PREFIX)/bin
I_PLUGIN = $(DESTDIR)$(PREFIX)/lib/hdf5/plugins
I_DOC    = $(DESTDIR)$(PREFIX)/share/doc/lt
I_MAN    = $(DESTDIR)$(PREFIX)/share/man/man1
MANPAGES := $(patsubst $(BINDIR)/%,$(BUILD)/man/%.1,$(TOOLS))

# Man pages from each tool's own --help (help2man) plus man/<tool>.h2m, so they cannot disagree.
$(BUILD)/man/%.1: $(BINDIR)/% man/%.h2m
	@command -v help2man >/dev/null || { echo "make: the man pages need help2man: run scripts/install-deps.sh"; exit 1; }
	@mkdir -p $(dir $@)
	help2man -N --no-discard-stderr --include=man/$*.h2m -o $@ ./$<
man: $(MANPAGES)

install: all man
	install -d $(I_BIN) $(I_PLUGIN) $(I_DOC)/docs $(I_DOC)/formats $(I_MAN)
	install -m 755 $(TOOLS) $(I_BIN)/
	install -m 755 $(PLUGIN) $(I_PLUGIN)/
	install -m 644 README.md $(I_DOC)/
	install -m 644 $(wildcard docs/*.md) $(I_DOC)/docs/
	install -m 644 $(wildcard formats/*.md) $(I_DOC)/formats/
	install -m 644 $(MANPAGES) $(I_MAN)/
	@echo "lt: installed under $(DESTDIR)$(PREFIX); programs that read caches (h5py, h5dump) find"
	@echo "    lt's filter with: export HDF5_PLUGIN_PATH=$(PREFIX)/lib/hdf5/plugins"

# Removes exactly what install wrote (folders shared with other software stay).
uninstall:
	rm -f $(addprefix $(I_BIN)/,$(notdir $(TOOLS))) $(I_PLUGIN)/$(notdir $(PLUGIN))
	rm -f $(addprefix $(I_MAN)/,$(notdir $(MANPAGES)))
	rm -rf $(I_DOC)
	-rmdir $(I_PLUGIN) $(DESTDIR)$(PREFIX)/lib/hdf5 2>/dev/null || true

clean:
	rm -rf $(BUILD) bin $(ASAN_BUILD) $(FUZZ_BUILD)

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
