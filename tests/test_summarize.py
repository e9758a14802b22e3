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
