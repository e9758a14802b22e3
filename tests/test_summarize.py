from tfdata import summarize


def test_summary_of_synthetic_data(synthetic_tfrecords, capsys):
    code = summarize.main([str(synthetic_tfrecords / "*.tfrecord"), "--class_labels",
                           str(synthetic_tfrecords / "class_labels_indices.csv")])
    out = capsys.readouterr().out
    assert code == 0
    assert "clips: 2000" in out and "Synthetic class 0 " in out


def test_missing_input_is_one_line_on_stderr(tmp_path, capsys):
    assert summarize.main([str(tmp_path / "*.tfrecord")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no files match") and err.count("\n") == 1


def test_hdf5_summary_matches_the_tfrecord_summary(tmp_path, capsys):
    """HDF5 goes through h5py (no tensorflow-io): the same clips give the same summary lines."""
    import sys

    from tfdata import synthetic

    config = synthetic.SyntheticConfig(num_clips=300, seed=3)
    synthetic.write_hdf5(config, str(tmp_path / "clips.h5"))
    synthetic.write_tfrecords(config, str(tmp_path / "tfrecords"))
    assert summarize.main([str(tmp_path / "clips.h5")]) == 0
    from_hdf5 = capsys.readouterr().out
    assert summarize.main([str(tmp_path / "tfrecords" / "*.tfrecord")]) == 0
    assert from_hdf5 == capsys.readouterr().out and "clips: 300" in from_hdf5
    assert "tensorflow_io" not in sys.modules
