OK_FORMAT = True

test = {   'name': 'q3',
    'points': 2,
    'suites': [   {   'cases': [   {   'code': ">>> assert mask_prompt is not ..., 'not done yet: write mask_prompt'\n"
                                               ">>> assert mask_prompt([5, 6, 7, 8], 2) == [-100, -100, 7, 8], 'mask the first prompt_length tokens'\n",
                                       'hidden': False,
                                       'locked': False}],
                      'scored': True,
                      'setup': '',
                      'teardown': '',
                      'type': 'doctest'}]}
