"""The contact sheet: one captioned tile per finished asset."""

from PIL import Image

from dreamstill.backend.batch.sheet import contact_sheet, tile_image, write_contact_sheet


def test_tiles_fill_a_near_square_grid_with_views_then_previews_then_grey(tmp_path):
    assets = [tmp_path / f"00{i}_x.glb" for i in range(1, 6)]
    for a in assets[:4]:
        a.write_bytes(b"x")
    Image.new("RGB", (64, 32), (255, 0, 0)).save(tmp_path / "001_x_views.png")
    (tmp_path / "previews").mkdir()
    Image.new("RGBA", (16, 16), (0, 0, 255, 255)).save(tmp_path / "previews" / "002_x.png")
    assert tile_image(assets[0]).name == "001_x_views.png"
    assert tile_image(assets[1]).name == "002_x.png"
    assert tile_image(assets[2]) is None
    sheet = Image.open(write_contact_sheet(assets, tmp_path)).convert("RGB")
    assert sheet.size == (2 * 160, 2 * (160 + 14))  # 4 finished assets (the 5th is missing): 2 x 2
    assert sheet.getpixel((80, 80)) == (255, 0, 0)  # views, letterboxed into the tile centre
    assert sheet.getpixel((160 + 80, 80)) == (0, 0, 255)
    assert sheet.getpixel((80, 174 + 80)) == (128, 128, 128)
    assert write_contact_sheet([tmp_path / "none.glb"], tmp_path / "previews") is None


def test_one_tile_sheet(tmp_path):
    path = contact_sheet([("only", None)], tmp_path / "s.png", size=40)
    assert Image.open(path).size == (40, 54)
