// HDF5 wrappers: every C call checked once here, failures become fi::Error.
#include "h5/h5.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace fi::h5 {

Handle::Handle(hid_t id, herr_t (*close)(hid_t), const std::string& what) : id_(id), close_(close) {
  if (id < 0) FI_FAIL(what);
}

Handle& Handle::operator=(Handle&& o) noexcept {
  if (this != &o) {
    reset();
    id_ = o.id_;
    close_ = o.close_;
    o.id_ = -1;
  }
  return *this;
}

void Handle::reset() {
  if (id_ >= 0 && close_) close_(id_);
  id_ = -1;
}

void check(herr_t status, const std::string& what) {
  if (status < 0) FI_FAIL(what);
}

void silence_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

Handle create_file(const std::string& path, hid_t fapl) {
  errno = 0;
  const hid_t id = H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, fapl);
  const std::string why = errno ? std::string(" (") + std::strerror(errno) + ")" : std::string();
  return Handle(id, H5Fclose, path + ": cannot create HDF5 file" + why);
}

Handle open_file(const std::string& path, bool write, hid_t fapl) {
  return Handle(H5Fopen(path.c_str(), write ? H5F_ACC_RDWR : H5F_ACC_RDONLY, fapl), H5Fclose,
                path + ": cannot open HDF5 file");
}

Handle create_group(hid_t loc, const std::string& name) {
  return Handle(H5Gcreate2(loc, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose,
                "cannot create HDF5 group " + name);
}

Handle open_dataset(hid_t loc, const std::string& name) {
  return Handle(H5Dopen2(loc, name.c_str(), H5P_DEFAULT), H5Dclose,
                "cannot open HDF5 dataset " + name);
}

namespace {
void write_attr(hid_t obj, const std::string& name, hid_t type, hid_t space, const void* v) {
  Handle a(H5Acreate2(obj, name.c_str(), type, space, H5P_DEFAULT, H5P_DEFAULT), H5Aclose,
           "cannot create attribute " + name);
  check(H5Awrite(a, type, v), "cannot write attribute " + name);
}
Handle scalar_space() { return Handle(H5Screate(H5S_SCALAR), H5Sclose, "H5Screate"); }
}  // namespace

void attr_string(hid_t obj, const std::string& name, const std::string& value) {
  Handle t(H5Tcopy(H5T_C_S1), H5Tclose, "H5Tcopy");
  check(H5Tset_size(t, value.empty() ? 1 : value.size()), "H5Tset_size");
  check(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset");
  check(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad");
  std::string v = value.empty() ? std::string(1, '\0') : value;
  write_attr(obj, name, t, scalar_space(), v.data());
}

void attr_int(hid_t obj, const std::string& name, int64_t value) {
  write_attr(obj, name, H5T_NATIVE_INT64, scalar_space(), &value);
}

void attr_double(hid_t obj, const std::string& name, double value) {
  write_attr(obj, name, H5T_NATIVE_DOUBLE, scalar_space(), &value);
}

void attr_ints(hid_t obj, const std::string& name, const std::vector<int64_t>& values) {
  hsize_t n = values.size();
  Handle s(H5Screate_simple(1, &n, nullptr), H5Sclose, "H5Screate_simple");
  write_attr(obj, name, H5T_NATIVE_INT64, s, values.data());
}

// Existing attributes are rewritten in place (same size, no metadata reallocation), so a kill
// during the write cannot leave the object header half-rebuilt.
void set_attr_int(hid_t obj, const std::string& name, int64_t value) {
  if (H5Aexists(obj, name.c_str()) <= 0) return attr_int(obj, name, value);
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "cannot open attribute " + name);
  check(H5Awrite(a, H5T_NATIVE_INT64, &value), "cannot write attribute " + name);
}

void set_attr_double(hid_t obj, const std::string& name, double value) {
  if (H5Aexists(obj, name.c_str()) <= 0) return attr_double(obj, name, value);
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "cannot open attribute " + name);
  check(H5Awrite(a, H5T_NATIVE_DOUBLE, &value), "cannot write attribute " + name);
}

bool has_attr(hid_t obj, const std::string& name) { return H5Aexists(obj, name.c_str()) > 0; }

int64_t read_attr_int(hid_t obj, const std::string& name) {
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "missing attribute " + name);
  int64_t v = 0;
  check(H5Aread(a, H5T_NATIVE_INT64, &v), "cannot read attribute " + name);
  return v;
}

std::string read_attr_string(hid_t obj, const std::string& name) {
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "missing attribute " + name);
  Handle t(H5Aget_type(a), H5Tclose, "H5Aget_type");
  if (H5Tis_variable_str(t) > 0) FI_FAIL("attribute " + name + " is a variable-length string");
  std::string v(H5Tget_size(t), '\0');
  check(H5Aread(a, t, v.data()), "cannot read attribute " + name);
  while (!v.empty() && v.back() == '\0') v.pop_back();
  return v;
}

std::vector<uint8_t> read_u8(hid_t loc, const std::string& name) {
  Handle d = open_dataset(loc, name);
  Handle s(H5Dget_space(d), H5Sclose, "H5Dget_space");
  std::vector<uint8_t> v(size_t(H5Sget_simple_extent_npoints(s)));
  check(H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()), "cannot read " + name);
  return v;
}

std::vector<int64_t> read_attr_ints(hid_t obj, const std::string& name) {
  Handle a(H5Aopen(obj, name.c_str(), H5P_DEFAULT), H5Aclose, "missing attribute " + name);
  Handle s(H5Aget_space(a), H5Sclose, "H5Aget_space");
  std::vector<int64_t> v(size_t(std::max<hssize_t>(0, H5Sget_simple_extent_npoints(s))));
  check(H5Aread(a, H5T_NATIVE_INT64, v.data()), "cannot read attribute " + name);
  return v;
}

bool exists(hid_t loc, const std::string& path) {
  // Each parent must exist before H5Lexists may be asked about the child.
  for (size_t p = path.find('/', 1); ; p = path.find('/', p + 1)) {
    const std::string part = path.substr(0, p);
    if (!part.empty() && part != "/" && H5Lexists(loc, part.c_str(), H5P_DEFAULT) <= 0) return false;
    if (p == std::string::npos) return true;
  }
}

std::vector<hsize_t> dataset_dims(hid_t dset) {
  Handle s(H5Dget_space(dset), H5Sclose, "H5Dget_space");
  std::vector<hsize_t> dims(size_t(std::max(0, H5Sget_simple_extent_ndims(s))));
  H5Sget_simple_extent_dims(s, dims.data(), nullptr);
  return dims;
}

void read_slab(hid_t dset, hid_t type, const std::vector<hsize_t>& start,
               const std::vector<hsize_t>& count, void* mem) {
  if (count.empty()) {
    check(H5Dread(dset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, mem), "HDF5 read failed");
    return;
  }
  Handle fspace(H5Dget_space(dset), H5Sclose, "H5Dget_space");
  check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "H5Sselect_hyperslab");
  Handle mspace(H5Screate_simple(int(count.size()), count.data(), nullptr), H5Sclose,
                "H5Screate_simple");
  check(H5Dread(dset, type, mspace, fspace, H5P_DEFAULT, mem), "HDF5 read failed");
}

Handle create_dataset(hid_t loc, const std::string& name, hid_t type,
                      const std::vector<hsize_t>& dims, const std::vector<hsize_t>& chunk,
                      bool compress) {
  // Early allocation: every chunk has its place in the file before any data is written, so
  // the decode's writes never touch metadata, in parallel or after a kill.
  Handle space(H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose,
               "H5Screate_simple " + name);
  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose, "H5Pcreate");
  check(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), "H5Pset_chunk " + name);
  check(H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY), "H5Pset_alloc_time " + name);
  check(H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC), "H5Pset_fill_time " + name);
  if (compress) {
    check(H5Pset_shuffle(dcpl), "H5Pset_shuffle " + name);
    check(H5Pset_deflate(dcpl, 1), "H5Pset_deflate " + name);
  }
  return Handle(H5Dcreate2(loc, name.c_str(), type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                H5Dclose, "cannot create dataset " + name);
}

void write_slab(hid_t dset, hid_t type, const std::vector<hsize_t>& start,
                const std::vector<hsize_t>& count, const void* mem, hid_t dxpl) {
  Handle fspace(H5Dget_space(dset), H5Sclose, "H5Dget_space");
  if (count.empty()) {
    check(H5Sselect_none(fspace), "H5Sselect_none");
    hsize_t one = 1;
    Handle mspace(H5Screate_simple(1, &one, nullptr), H5Sclose, "H5Screate_simple");
    check(H5Sselect_none(mspace), "H5Sselect_none");
    check(H5Dwrite(dset, type, mspace, fspace, dxpl, mem), "HDF5 write failed");
    return;
  }
  check(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "H5Sselect_hyperslab");
  Handle mspace(H5Screate_simple(int(count.size()), count.data(), nullptr), H5Sclose,
                "H5Screate_simple");
  check(H5Dwrite(dset, type, mspace, fspace, dxpl, mem), "HDF5 write failed");
}

}  // namespace fi::h5
