// Thin throwing wrappers over the HDF5 C API: an owning handle per id type, and helpers for
// the few calls the map needs (attributes, datasets, hyperslab writes). Errors name the file.
#pragma once
#include <hdf5.h>

#include <cstdint>
#include <string>
#include <vector>

namespace fi::h5 {

// Owns an hid_t and closes it with the right H5?close.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*close)(hid_t), const std::string& what);
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t id() const { return id_; }
  operator hid_t() const { return id_; }
  void reset();

 private:
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

void check(herr_t status, const std::string& what);  // throws fi::Error when status < 0
void silence_errors();  // HDF5 prints stacks on failure by default; we throw our own line

Handle create_file(const std::string& path, hid_t fapl = H5P_DEFAULT);
Handle open_file(const std::string& path, bool write, hid_t fapl = H5P_DEFAULT);
Handle create_group(hid_t loc, const std::string& name);
Handle open_dataset(hid_t loc, const std::string& name);

void attr_string(hid_t obj, const std::string& name, const std::string& value);
void attr_int(hid_t obj, const std::string& name, int64_t value);
void attr_double(hid_t obj, const std::string& name, double value);
void attr_ints(hid_t obj, const std::string& name, const std::vector<int64_t>& values);
// Creates or overwrites a scalar int64 attribute.
void set_attr_int(hid_t obj, const std::string& name, int64_t value);
void set_attr_double(hid_t obj, const std::string& name, double value);
bool has_attr(hid_t obj, const std::string& name);
int64_t read_attr_int(hid_t obj, const std::string& name);
std::string read_attr_string(hid_t obj, const std::string& name);  // fixed-length strings
std::vector<uint8_t> read_u8(hid_t loc, const std::string& name);  // a whole uint8 dataset
std::vector<int64_t> read_attr_ints(hid_t obj, const std::string& name);  // any int attribute
bool exists(hid_t loc, const std::string& path);  // a link (group or dataset) at path
std::vector<hsize_t> dataset_dims(hid_t dset);
// Reads the whole dataset (count empty) or the hyperslab [start, start+count) into mem.
void read_slab(hid_t dset, hid_t type, const std::vector<hsize_t>& start,
               const std::vector<hsize_t>& count, void* mem);

// A chunked dataset with early allocation (so parallel writers never allocate), fill value 0,
// and gzip+shuffle when `compress`.
Handle create_dataset(hid_t loc, const std::string& name, hid_t type,
                      const std::vector<hsize_t>& dims, const std::vector<hsize_t>& chunk,
                      bool compress);

// Writes a hyperslab [start, start+count) of a dataset from mem (contiguous, same type), or
// takes part in a collective write with nothing when count is empty. dxpl may be collective.
void write_slab(hid_t dset, hid_t type, const std::vector<hsize_t>& start,
                const std::vector<hsize_t>& count, const void* mem, hid_t dxpl = H5P_DEFAULT);

}  // namespace fi::h5
