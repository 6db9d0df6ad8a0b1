#!/bin/sh
# Makes the tiny bring-your-own data sets of .test/config/variants.yaml and pairs.yaml
# from the golden photos, with ImageMagick (not risbench): run from the repository root.
# variants/: originals/ (links to 8 golden photos) and three folders made by `convert`.
# pairs/: references/ (links to 12 golden photos), queries/ (9 made by `convert`: 5 of
# one reference, 1 of two side by side, 3 of photos not among the references) and
# ground_truth.csv (ISC2021's columns; an empty reference_id for the 3 without one).
set -eu
golden=tests/data/golden/images
photos=$(ls "$golden" | head -20)
rm -rf .test/variants .test/pairs
mkdir -p .test/variants/originals .test/variants/rotate5 .test/variants/blur4x2 \
    .test/variants/quality30 .test/pairs/references .test/pairs/queries
for name in $(echo "$photos" | head -8); do
    stem=${name%.png}
    ln -s "../../../$golden/$name" ".test/variants/originals/$name"
    convert "$golden/$name" -rotate 5 ".test/variants/rotate5/$stem.jpg"
    convert "$golden/$name" -blur 4x2 -quality 90 ".test/variants/blur4x2/$stem.jpg"
    convert "$golden/$name" -quality 30 ".test/variants/quality30/$stem.jpg"
done
for name in $(echo "$photos" | head -12); do
    ln -s "../../../$golden/$name" ".test/pairs/references/$name"
done
set -- $(echo "$photos" | head -12 | sed 's/\.png$//')
gt=.test/pairs/ground_truth.csv
echo "query_id,reference_id" > "$gt"
convert "$golden/$1.png" -rotate 5 .test/pairs/queries/Q0.jpg && echo "Q0,$1" >> "$gt"
convert "$golden/$2.png" -blur 4x2 .test/pairs/queries/Q1.jpg && echo "Q1,$2" >> "$gt"
convert "$golden/$3.png" -quality 30 .test/pairs/queries/Q2.jpg && echo "Q2,$3" >> "$gt"
convert "$golden/$4.png" -crop 80%x80%+20+20 +repage .test/pairs/queries/Q3.jpg && echo "Q3,$4" >> "$gt"
convert "$golden/$5.png" -colorspace Gray .test/pairs/queries/Q4.jpg && echo "Q4,$5" >> "$gt"
convert "$golden/$6.png" "$golden/$7.png" +append -resize 50% .test/pairs/queries/Q5.jpg
printf 'Q5,%s\nQ5,%s\n' "$6" "$7" >> "$gt"
q=6
for name in $(echo "$photos" | sed -n '13,15p'); do
    convert "$golden/$name" -rotate 5 ".test/pairs/queries/Q$q.jpg" && echo "Q$q," >> "$gt"
    q=$((q + 1))
done
